"""What to probe on a domain, how often and how patiently.

Three layers, each overriding the one before, field by field:

1. the configuration defaults (:class:`Defaults`, from the config file);
2. the host policy file (YAML): every rule whose ``match`` fits the
   domain applies, in file order, so later rules override earlier ones
   (general rules first, specific ones last). ``probes`` is replaced as a
   whole list, never merged;
3. per-instance keys: ``masakari_iim:<field>`` in the flavor extra specs
   (set by the cloud admin) and, only if the policy file allows it, in
   the image properties (set by image owners, often tenants). Image
   properties apply first, flavor extra specs last, so the admin wins.
   A bad per-instance value is ignored with a note, never fatal: one
   instance's metadata must not stop the monitoring of the host.

Resolution is pure: :func:`resolve` reads only its arguments, so it can
be re-run for every domain after a reload. The result records which
layer supplied each value (``sources``), because an operator must never
have to guess why a VM is watched the way it is (:func:`explain`).

Loading is all or nothing: :func:`load_policy_file` either returns a
complete, validated :class:`PolicyFile` or raises :class:`PolicyError`
naming the rule and field; the caller keeps its previous policy then.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
from typing import Any, Mapping

import yaml

from masakarimonitors_iim.hypervisor.types import DomainInfo
from masakarimonitors_iim.probes.base import ProbeConfigError, UnknownProbe, load_probe


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    name: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EffectivePolicy:
    enabled: bool
    probes: tuple[ProbeSpec, ...]
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    startup_grace: float
    #: field name -> where its value came from ("config", "rule 'x'", ...)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    #: names of the policy-file rules that matched, in the order applied
    matched_rules: tuple[str, ...] = ()
    #: ignored per-instance keys and suspicious combinations, for status
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Defaults:
    """The config-file defaults every domain starts from."""

    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int = 1
    startup_grace: float = 0.0
    probes: tuple[ProbeSpec, ...] = (ProbeSpec("ping"),)
    enabled: bool = True


FIELDS = ("enabled", "probes", "interval", "timeout", "failure_threshold",
          "success_threshold", "startup_grace")

#: field -> (kind, minimum, maximum), shared by rules and per-instance keys.
SCALAR_FIELDS: dict[str, tuple[str, float, float]] = {
    "interval": ("number", 1, 3600),
    "timeout": ("number", 0.5, 600),
    "failure_threshold": ("integer", 1, 100),
    "success_threshold": ("integer", 1, 100),
    "startup_grace": ("number", 0, 86400),
}

INSTANCE_KEY_PREFIX = "masakari_iim:"
#: Where per-instance keys may come from, in the order they are applied.
INSTANCE_KEY_ORIGINS = ("image_properties", "flavor_extra_specs")
DEFAULT_INSTANCE_KEYS = ("flavor_extra_specs",)

MAX_FILE_BYTES = 1024 * 1024
FORMAT_VERSION = 1

_STRING_MATCH_KEYS = ("instance_uuid", "instance_name", "domain_name", "flavor_name",
                      "image_uuid", "project_uuid", "project_name")
_MAP_MATCH_KEYS = ("image_properties", "flavor_extra_specs")
_UUID_KEYS = ("instance_uuid", "image_uuid", "project_uuid")
_TOP_KEYS = ("version", "rules", "probe_sets", "instance_keys")
_RULE_KEYS = ("name", "match", "enabled", "probes", "probe_set") + tuple(SCALAR_FIELDS)
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class PolicyError(ValueError):
    """The policy file is invalid; one line naming the rule, field and fix."""


@dataclasses.dataclass(frozen=True)
class Match:
    """A rule's conditions; all must hold. Each takes a glob or a list of
    globs (any may match); an empty Match matches every domain."""

    #: key -> globs, for instance_uuid, instance_name, domain_name, ...
    fields: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    image_properties: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    flavor_extra_specs: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def matches(self, domain: DomainInfo) -> bool:
        for key, globs in self.fields.items():
            value = _domain_value(domain, key)
            if not value or not _glob_any(value, globs, key in _UUID_KEYS):
                return False
        for attr in _MAP_MATCH_KEYS:
            wanted: dict[str, tuple[str, ...]] = getattr(self, attr)
            have = getattr(domain.nova, attr) if domain.nova is not None else {}
            for key, globs in wanted.items():
                if key not in have or not _glob_any(str(have[key]), globs, False):
                    return False
        return True


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    #: 1-based position in the file, for messages
    index: int
    match: Match
    #: only the fields this rule sets, already validated
    values: dict[str, Any]
    #: the probe set this rule's probes came from, if any
    probe_set: str | None = None

    def source(self, field: str) -> str:
        """How ``sources`` names this rule as the supplier of ``field``."""
        if field == "probes" and self.probe_set:
            return "rule %r (probe_set %r)" % (self.name, self.probe_set)
        return "rule %r" % self.name


@dataclasses.dataclass(frozen=True)
class PolicyFile:
    path: str
    rules: tuple[Rule, ...] = ()
    probe_sets: dict[str, tuple[ProbeSpec, ...]] = dataclasses.field(default_factory=dict)
    instance_keys: tuple[str, ...] = DEFAULT_INSTANCE_KEYS


# -- resolution --------------------------------------------------------------

def resolve(defaults: Defaults, domain: DomainInfo,
            policy_file: PolicyFile | None = None) -> EffectivePolicy:
    """The policy for ``domain``: defaults, then matching rules in file
    order, then per-instance keys. Pure: no I/O, never raises for bad
    instance metadata (it is ignored and noted instead)."""
    values: dict[str, Any] = {f: getattr(defaults, f) for f in FIELDS}
    sources = {f: "config" for f in FIELDS}
    matched: list[str] = []
    notes: list[str] = []
    probe_sets = policy_file.probe_sets if policy_file is not None else {}
    allowed = policy_file.instance_keys if policy_file is not None else DEFAULT_INSTANCE_KEYS

    if policy_file is not None:
        for rule in policy_file.rules:
            if rule.match.matches(domain):
                matched.append(rule.name)
                for field, value in rule.values.items():
                    values[field] = value
                    sources[field] = rule.source(field)

    if domain.nova is not None:
        for origin in INSTANCE_KEY_ORIGINS:
            metadata: dict[str, str] = getattr(domain.nova, origin)
            keys = sorted(k for k in metadata if k.startswith(INSTANCE_KEY_PREFIX))
            for key in keys:
                where = "%s %r" % (_ORIGIN_LABEL[origin], key)
                if origin not in allowed:
                    notes.append("ignored %s: the policy file's instance_keys does not "
                                 "allow %s" % (where, origin))
                    continue
                field = key[len(INSTANCE_KEY_PREFIX):]
                value, problem = _instance_value(field, metadata[key], probe_sets)
                if problem:
                    notes.append("ignored %s=%r: %s" % (where, _short(metadata[key]), problem))
                    continue
                if field == "probe_set":
                    values["probes"] = value
                    sources["probes"] = "%s (probe_set %r)" % (where, str(metadata[key]).strip())
                else:
                    values[field] = value
                    sources[field] = where

    notes.extend(_combination_notes(values))
    return EffectivePolicy(**values, sources=sources, matched_rules=tuple(matched),
                           notes=tuple(notes))


_ORIGIN_LABEL = {"image_properties": "image property",
                 "flavor_extra_specs": "flavor extra spec"}


def _instance_value(field: str, raw: Any, probe_sets: Mapping[str, tuple[ProbeSpec, ...]]
                    ) -> tuple[Any, str]:
    """Parse one per-instance value: (value, "") or (None, problem)."""
    text = str(raw).strip()
    if field == "enabled":
        if text.lower() in _TRUE:
            return True, ""
        if text.lower() in _FALSE:
            return False, ""
        return None, "must be true or false"
    if field == "probe_set":
        if text in probe_sets:
            return probe_sets[text], ""
        known = ", ".join(sorted(probe_sets)) or "none defined"
        return None, "no probe set of that name in the policy file (known: %s)" % known
    if field in SCALAR_FIELDS:
        kind, low, high = SCALAR_FIELDS[field]
        try:
            number = int(text) if kind == "integer" else float(text)
        except ValueError:
            return None, "must be a %s between %g and %g" % (kind, low, high)
        if not math.isfinite(number) or not low <= number <= high:
            return None, "must be a %s between %g and %g" % (kind, low, high)
        return number, ""
    return None, "unknown key (known: %s)" % ", ".join(
        INSTANCE_KEY_PREFIX + f for f in ("enabled", "probe_set", *SCALAR_FIELDS))


def _combination_notes(values: Mapping[str, Any]) -> list[str]:
    """Settings that are valid alone but work against each other."""
    notes = []
    for spec in values["probes"]:
        limit = spec.params.get("timeout")
        if spec.name == "exec" and isinstance(limit, (int, float)) \
                and limit > values["timeout"]:
            notes.append("probe 'exec' timeout %g s exceeds the round timeout %g s: the "
                         "command spans rounds and the rounds in between report UNKNOWN"
                         % (limit, values["timeout"]))
        max_age = spec.params.get("max_age")
        if spec.name == "heartbeat_file" and isinstance(max_age, (int, float)) \
                and max_age < 2 * values["interval"]:
            notes.append("probe 'heartbeat_file' max_age %g s is less than twice the "
                         "interval %g s: a stalled heartbeat may go unnoticed; raise "
                         "max_age or lower interval" % (max_age, values["interval"]))
    return notes


def _domain_value(domain: DomainInfo, key: str) -> str:
    if key == "instance_uuid":
        return domain.uuid
    if key == "domain_name":
        return domain.name
    if domain.nova is None:
        return ""
    return getattr(domain.nova, key)


def _glob_any(value: str, globs: tuple[str, ...], fold_case: bool) -> bool:
    if fold_case:
        value = value.lower()
        return any(fnmatch.fnmatchcase(value, g.lower()) for g in globs)
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


# -- explaining --------------------------------------------------------------

def explain(policy: EffectivePolicy) -> list[str]:
    """Lines for ``masakari-iim policy show``: each field, its value and
    the layer that supplied it, then the matched rules and any notes."""
    lines = []
    for field in FIELDS:
        value = getattr(policy, field)
        if field == "enabled":
            shown = "yes" if value else "no (unmonitored by policy)"
        elif field == "probes":
            shown = ", ".join(_probe_text(spec) for spec in value) or "none"
        elif field in ("interval", "timeout", "startup_grace"):
            shown = "%g s" % value
        else:
            shown = str(value)
        lines.append("%s: %s  [%s]" % (field, shown, policy.sources.get(field, "?")))
    lines.append("matched rules: %s" % (", ".join(policy.matched_rules) or "none"))
    lines.extend("note: %s" % note for note in policy.notes)
    return lines


def _probe_text(spec: ProbeSpec) -> str:
    if not spec.params:
        return spec.name
    return "%s %s" % (spec.name, json.dumps(spec.params, sort_keys=True, default=str))


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:60] + "..."


# -- loading -----------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML keeps the last one
    silently, which turns a copy-paste slip into a wrong policy."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _construct_mapping)


class _Checker:
    """Builds the one-line messages: "policy file P: WHERE, field F: problem"."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, where: str | None, field: str | None, problem: str) -> PolicyError:
        """``where`` is the rule or section (None: the file as a whole)."""
        text = "policy file %s: " % self.path
        if where:
            text += where + ", " if field else where + ": "
        if field:
            text += "field %r: " % field
        return PolicyError(text + problem)


def load_policy_file(path: str) -> PolicyFile:
    """Read and validate the host policy file, all or nothing.

    Every probe is instantiated once through stevedore with its
    parameters, so a parameter the probe would reject at run time is
    rejected now, while the previous policy is still in force.
    """
    check = _Checker(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise check.error(None, None, "the file cannot be read (%s); fix the path or the "
                          "permissions" % (err.strerror or err)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise check.error(None, None, "the file is larger than %d bytes; split out what "
                          "is not needed" % MAX_FILE_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise check.error(None, None, "the file is not UTF-8 (byte %d); save it as UTF-8"
                          % err.start) from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise check.error(None, None, "not valid YAML: %s" % _yaml_problem(err)) from None
    return _parse(check, doc)


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is not None:
        return "%s at line %d, column %d" % (problem, mark.line + 1, mark.column + 1)
    return problem


def _parse(check: _Checker, doc: Any) -> PolicyFile:
    top = "top level"
    if doc is None:
        raise check.error(None, None, "the file is empty; start it with 'version: 1'")
    if not isinstance(doc, dict):
        raise check.error(top, None, "must be a mapping with 'version' and 'rules'")
    _reject_unknown(check, top, doc, _TOP_KEYS)
    if doc.get("version") != FORMAT_VERSION or isinstance(doc.get("version"), bool):
        raise check.error(top, "version", "must be %d, got %r" % (FORMAT_VERSION,
                                                                 doc.get("version")))

    instance_keys = doc.get("instance_keys", list(DEFAULT_INSTANCE_KEYS))
    if not isinstance(instance_keys, list) or any(k not in INSTANCE_KEY_ORIGINS
                                                  for k in instance_keys):
        raise check.error(top, "instance_keys", "must be a list drawn from %s, got %r"
                          % (", ".join(INSTANCE_KEY_ORIGINS), instance_keys))

    probe_sets: dict[str, tuple[ProbeSpec, ...]] = {}
    raw_sets = doc.get("probe_sets", {})
    if not isinstance(raw_sets, dict):
        raise check.error(top, "probe_sets", "must be a mapping of set name to a list "
                          "of probes")
    for set_name, probes in raw_sets.items():
        where = "probe set %r" % (set_name,)
        if not isinstance(set_name, str) or not _NAME.match(set_name):
            raise check.error(where, None, "name must be 1-64 letters, digits or _.:-")
        probe_sets[set_name] = _probes(check, where, "probes", probes)

    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        raise check.error(top, "rules", "must be a list of rules (each starting with '- name:')")
    rules = []
    names: set[str] = set()
    for index, raw_rule in enumerate(raw_rules, start=1):
        rule = _rule(check, index, raw_rule, probe_sets)
        if rule.name in names:
            raise check.error("rule #%d" % index, "name", "%r is already used by an "
                              "earlier rule; names must be unique" % rule.name)
        names.add(rule.name)
        rules.append(rule)
    origins = tuple(o for o in INSTANCE_KEY_ORIGINS if o in instance_keys)
    return PolicyFile(path=check.path, rules=tuple(rules), probe_sets=probe_sets,
                      instance_keys=origins)


def _reject_unknown(check: _Checker, where: str | None, mapping: dict,
                    known: tuple[str, ...], prefix: str = "") -> None:
    """Unknown keys are typos until proven otherwise: refuse them."""
    for key in mapping:
        if key not in known:
            raise check.error(where, prefix + str(key), "unknown key; known keys are %s"
                              % ", ".join(known))


def _rule(check: _Checker, index: int, raw: Any,
          probe_sets: Mapping[str, tuple[ProbeSpec, ...]]) -> Rule:
    where = "rule #%d" % index
    if not isinstance(raw, dict):
        raise check.error(where, None, "must be a mapping with at least 'name'")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise check.error(where, "name", "is required: 1-64 letters, digits or _.:-, "
                          "got %r" % (name,))
    where = "rule %r (#%d)" % (name, index)
    _reject_unknown(check, where, raw, _RULE_KEYS)

    values: dict[str, Any] = {}
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            raise check.error(where, "enabled", "must be true or false, got %r"
                              % (raw["enabled"],))
        values["enabled"] = raw["enabled"]
    for field, (kind, low, high) in SCALAR_FIELDS.items():
        if field in raw:
            values[field] = _scalar(check, where, field, raw[field], kind, low, high)
    probe_set = None
    if "probes" in raw and "probe_set" in raw:
        raise check.error(where, "probe_set", "give either 'probes' or 'probe_set', not both")
    if "probes" in raw:
        values["probes"] = _probes(check, where, "probes", raw["probes"])
    if "probe_set" in raw:
        probe_set = raw["probe_set"]
        if not isinstance(probe_set, str) or probe_set not in probe_sets:
            raise check.error(where, "probe_set", "%r is not defined under probe_sets "
                              "(defined: %s)" % (probe_set,
                                                 ", ".join(sorted(probe_sets)) or "none"))
        values["probes"] = probe_sets[probe_set]
    match = _match(check, where, raw.get("match", {}))
    return Rule(name=name, index=index, match=match, values=values, probe_set=probe_set)


def _scalar(check: _Checker, where: str, field: str, value: Any, kind: str,
            low: float, high: float) -> float | int:
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise check.error(where, field, "must be a %s between %g and %g, got %r"
                          % (kind, low, high, value))
    return value if kind == "integer" else float(value)


def _match(check: _Checker, where: str, raw: Any) -> Match:
    if not isinstance(raw, dict):
        raise check.error(where, "match", "must be a mapping of conditions (or left out "
                          "to match every domain)")
    _reject_unknown(check, where, raw, _STRING_MATCH_KEYS + _MAP_MATCH_KEYS, "match.")
    fields = {}
    for key in _STRING_MATCH_KEYS:
        if key in raw:
            fields[key] = _globs(check, where, "match." + key, raw[key])
    maps = {}
    for key in _MAP_MATCH_KEYS:
        wanted = raw.get(key, {})
        if not isinstance(wanted, dict) or not all(isinstance(k, str) for k in wanted):
            raise check.error(where, "match." + key, "must be a mapping of key to glob")
        maps[key] = {k: _globs(check, where, "match.%s.%s" % (key, k), v)
                     for k, v in wanted.items()}
    return Match(fields=fields, **maps)


def _globs(check: _Checker, where: str, field: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise check.error(where, field, "must be a non-empty string (glob) or a list of "
                          "them; quote values YAML would read as numbers or booleans, "
                          "got %r" % (value,))
    return tuple(items)


def _probes(check: _Checker, where: str, field: str, raw: Any) -> tuple[ProbeSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise check.error(where, field, "must be a non-empty list of probes; to stop "
                          "monitoring use 'enabled: false'")
    specs = []
    for i, item in enumerate(raw):
        at = "%s[%d]" % (field, i)
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise check.error(where, at, "must be a probe name or a mapping with 'name' "
                              "and 'params'")
        _reject_unknown(check, where, item, ("name", "params"), at + ".")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise check.error(where, at + ".name", "is required, e.g. 'ping' or 'exec'")
        params = item.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise check.error(where, at + ".params", "must be a mapping of parameter "
                              "name to value")
        _validate_probe(check, where, at, name, params)
        specs.append(ProbeSpec(name, params))
    return tuple(specs)


def _validate_probe(check: _Checker, where: str, at: str, name: str,
                    params: dict[str, Any]) -> None:
    """Instantiate the probe once, as the monitor will, and discard it."""
    try:
        load_probe(name, params)
    except UnknownProbe as err:
        raise check.error(where, at + ".name", str(err)) from None
    except ProbeConfigError as err:
        raise check.error(where, at + ".params", str(err)) from None
    except Exception as err:  # a third-party plugin's bug must not crash a reload
        raise check.error(where, at, "probe plugin %r failed to load: %s"
                          % (name, err)) from None
