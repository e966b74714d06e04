"""Reading the host policy file: all or nothing.

:func:`load_policy_file` either returns a complete, validated
:class:`PolicyFile` or raises :class:`PolicyError` with one line naming
the rule and field, so the caller can keep its previous policy and the
operator can fix the file from the message alone. Unknown keys and
duplicate keys are refused rather than ignored: in a hand-written file
they are almost always typos, and a typo silently ignored is a VM
silently watched the wrong way.
"""
from __future__ import annotations

import re
import reprlib
from typing import Any, Mapping

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.policy.model import (
    BOOL_FIELDS,
    CHOICE_FIELDS,
    DEFAULT_INSTANCE_KEYS,
    INSTANCE_KEY_ORIGINS,
    MAP_MATCH_KEYS,
    SCALAR_FIELDS,
    STRING_MATCH_KEYS,
    Match,
    PolicyError,
    PolicyFile,
    ProbeSpec,
    Rule,
    scalar_ok,
)
from masakarimonitors_iim.policy.safe_yaml import YamlProblem, read
from masakarimonitors_iim.policy.tenant import LimitProblem, parse_limits
from masakarimonitors_iim.probes.base import ProbeConfigError, UnknownProbe, load_probe

MAX_FILE_BYTES = 1024 * 1024
FORMAT_VERSION = 1

_TOP_KEYS = ("version", "rules", "probe_sets", "instance_keys", "tenant_limits")
_RULE_KEYS = ("name", "match", "probes", "probe_set") + BOOL_FIELDS + tuple(
    CHOICE_FIELDS) + tuple(SCALAR_FIELDS)
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: Longest message, in characters: a file can be up to 1 MiB, a message
#: quoting it must still be one line an operator can read.
MAX_MESSAGE = 600

# What a message quotes of a value: a glimpse, however big the value.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def _shown(value: Any) -> str:
    """A bounded repr for messages: ``%r`` of a value built from nested
    aliases alone once took 800 million characters."""
    return one_line(_REPR.repr(value), 100)


class _Checker:
    """Builds the one-line messages: "policy file P: WHERE, field F: problem"."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, where: str | None, field: str | None, problem: str) -> PolicyError:
        """``where`` is the rule or section (None: the file as a whole)."""
        text = "policy file %s: " % self.path
        if where:
            where = one_line(where, 120)
            text += where + ", " if field else where + ": "
        if field:
            text += "field %r: " % one_line(field, 80)
        return PolicyError(one_line(text + problem, MAX_MESSAGE))


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
        doc = read(text)
    except YamlProblem as err:
        raise check.error(None, None, str(err)) from None
    try:
        return _parse(check, doc)
    except PolicyError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        # A shape no check foresaw (PolicyError is a ValueError, hence the
        # order): still one line, and the caller keeps its policy.
        raise check.error(None, None, "cannot be checked (%s: %s); compare it with the "
                          "examples in the documentation" % (type(err).__name__,
                                                             one_line(err, 100))) from None


def _parse(check: _Checker, doc: Any) -> PolicyFile:
    top = "top level"
    if doc is None:
        raise check.error(None, None, "the file is empty; start it with 'version: 1'")
    if not isinstance(doc, dict):
        raise check.error(top, None, "must be a mapping with 'version' and 'rules'")
    _reject_unknown(check, top, doc, _TOP_KEYS)
    if doc.get("version") != FORMAT_VERSION or isinstance(doc.get("version"), bool):
        raise check.error(top, "version", "must be %d, got %s" % (FORMAT_VERSION,
                                                                 _shown(doc.get("version"))))

    instance_keys = doc.get("instance_keys", list(DEFAULT_INSTANCE_KEYS))
    if not isinstance(instance_keys, list) or any(k not in INSTANCE_KEY_ORIGINS
                                                  for k in instance_keys):
        raise check.error(top, "instance_keys", "must be a list drawn from %s, got %s"
                          % (", ".join(INSTANCE_KEY_ORIGINS), _shown(instance_keys)))

    probe_sets: dict[str, tuple[ProbeSpec, ...]] = {}
    raw_sets = doc.get("probe_sets", {})
    if not isinstance(raw_sets, dict):
        raise check.error(top, "probe_sets", "must be a mapping of set name to a list "
                          "of probes")
    for set_name, probes in raw_sets.items():
        where = "probe set %s" % _shown(set_name)
        if not isinstance(set_name, str) or not _NAME.match(set_name):
            raise check.error(where, None, "name must be 1-64 letters, digits or _.:-")
        probe_sets[set_name] = _probes(check, where, "probes", probes)

    try:
        tenant_limits = parse_limits(doc.get("tenant_limits", {}), probe_sets)
    except LimitProblem as err:
        raise check.error(top, err.field, err.problem) from None

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
                      instance_keys=origins, tenant_limits=tenant_limits)


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
                          "got %s" % _shown(name))
    where = "rule %r (#%d)" % (name, index)
    _reject_unknown(check, where, raw, _RULE_KEYS)

    values: dict[str, Any] = {}
    for field in BOOL_FIELDS:
        if field in raw:
            if not isinstance(raw[field], bool):
                raise check.error(where, field, "must be true or false, got %s"
                                  % _shown(raw[field]))
            values[field] = raw[field]
    for field, choices in CHOICE_FIELDS.items():
        if field in raw:
            if raw[field] not in choices:
                raise check.error(where, field, "must be one of %s, got %s"
                                  % (", ".join(choices), _shown(raw[field])))
            values[field] = raw[field]
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
            raise check.error(where, "probe_set", "%s is not defined under probe_sets "
                              "(defined: %s)" % (_shown(probe_set),
                                                 ", ".join(sorted(probe_sets)) or "none"))
        values["probes"] = probe_sets[probe_set]
    match = _match(check, where, raw.get("match", {}))
    return Rule(name=name, index=index, match=match, values=values, probe_set=probe_set)


def _scalar(check: _Checker, where: str, field: str, value: Any, kind: str,
            low: float, high: float) -> float | int:
    if not scalar_ok(kind, value, low, high):
        raise check.error(where, field, "must be a %s between %g and %g, got %s"
                          % (kind, low, high, _shown(value)))
    return value if kind == "integer" else float(value)


def _match(check: _Checker, where: str, raw: Any) -> Match:
    if not isinstance(raw, dict):
        raise check.error(where, "match", "must be a mapping of conditions (or left out "
                          "to match every domain)")
    _reject_unknown(check, where, raw, STRING_MATCH_KEYS + MAP_MATCH_KEYS, "match.")
    fields = {}
    for key in STRING_MATCH_KEYS:
        if key in raw:
            fields[key] = _globs(check, where, "match." + key, raw[key])
    maps = {}
    for key in MAP_MATCH_KEYS:
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
                          "got %s" % _shown(value))
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
        raise check.error(where, at, "probe plugin %s failed to load: %s"
                          % (_shown(name), one_line(err, 200))) from None
