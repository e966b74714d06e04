"""The policy's data: what a rule, a policy file and a resolved policy hold.

Kept apart from loading and resolution so that both (and the monitor,
which stores :class:`EffectivePolicy` per domain) share one definition of
the fields and their bounds: a value a rule may set and a value a
per-instance key may set are checked against the same table.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any

from masakarimonitors_iim.hypervisor.types import DomainInfo


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
    #: the trust fields (issue 8); defaults here so callers that predate
    #: them keep working. See doc/source/scenarios.rst for the numbers.
    action: str = "notify"
    boot_deadline: float = 240.0
    boot_report: str = "seen-before"
    restart_budget: int = 3
    restart_budget_window: float = 86400.0
    restart_budget_reset: float = 3600.0
    corroborate: bool = True
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
    action: str = "notify"
    #: vSphere HA's middle "minimum uptime" (120/240/480 s): long enough
    #: for a TCG-emulated or heavily loaded guest to boot its agent.
    boot_deadline: float = 240.0
    boot_report: str = "seen-before"
    #: vSphere HA VM Monitoring's default: 3 resets per 24 h per VM.
    restart_budget: int = 3
    restart_budget_window: float = 86400.0
    restart_budget_reset: float = 3600.0
    corroborate: bool = True


FIELDS = ("enabled", "probes", "interval", "timeout", "failure_threshold",
          "success_threshold", "startup_grace", "action", "boot_deadline",
          "boot_report", "restart_budget", "restart_budget_window",
          "restart_budget_reset", "corroborate")

#: Yes/no fields, and fields that take one of a few words.
BOOL_FIELDS = ("enabled", "corroborate")
CHOICE_FIELDS: dict[str, tuple[str, ...]] = {
    "action": ("notify", "observe"),
    "boot_report": ("seen-before", "always"),
}
#: Fields no image property may set (a tenant could otherwise switch its
#: VM's reporting off silently: observe mode, a budget of 0, corroboration
#: off or on); flavor extra specs (chosen by the operator) and rules may.
OPERATOR_ONLY_FIELDS = ("action", "boot_deadline", "boot_report", "restart_budget",
                        "restart_budget_window", "restart_budget_reset", "corroborate")

#: field -> (kind, minimum, maximum), shared by rules and per-instance keys.
SCALAR_FIELDS: dict[str, tuple[str, float, float]] = {
    "interval": ("number", 1, 3600),
    "timeout": ("number", 0.5, 600),
    "failure_threshold": ("integer", 1, 100),
    "success_threshold": ("integer", 1, 100),
    "startup_grace": ("number", 0, 86400),
    "boot_deadline": ("number", 1, 86400),
    #: 0: no budget (every episode is notified)
    "restart_budget": ("integer", 0, 1000),
    #: at most the 7 days delivered notifications are kept (the count)
    "restart_budget_window": ("number", 60, 7 * 86400),
    "restart_budget_reset": ("number", 0, 30 * 86400),
}

INSTANCE_KEY_PREFIX = "masakari_iim:"
#: Where per-instance keys may come from, in the order they are applied.
INSTANCE_KEY_ORIGINS = ("image_properties", "flavor_extra_specs")
DEFAULT_INSTANCE_KEYS = ("flavor_extra_specs",)

#: Match keys compared with one value of the domain.
STRING_MATCH_KEYS = ("instance_uuid", "instance_name", "domain_name", "flavor_name",
                     "image_uuid", "project_uuid", "project_name")
#: Match keys compared with a key of one of the domain's metadata maps.
MAP_MATCH_KEYS = ("image_properties", "flavor_extra_specs")
#: UUIDs are case-insensitive (RFC 4122): an upper-case one pasted into the
#: file must still match.
UUID_KEYS = ("instance_uuid", "image_uuid", "project_uuid")


#: tenant_limits key -> (field it bounds, "max" or "min"). A tenant (an
#: image property) may move a field freely in the direction that costs the
#: host nothing and, in the other, only as far as the operator's own value
#: or this key, whichever allows more. "max": the tenant may not go above.
TENANT_LIMIT_KEYS: dict[str, tuple[str, str]] = {
    "max_timeout": ("timeout", "max"),
    "min_interval": ("interval", "min"),
    "min_failure_threshold": ("failure_threshold", "min"),
    "min_success_threshold": ("success_threshold", "min"),
    "min_startup_grace": ("startup_grace", "min"),
}


@dataclasses.dataclass(frozen=True)
class TenantLimits:
    """How far image properties (set by tenants) may move the operator's
    values; see :mod:`.tenant`. Empty: not beyond the operator's values."""

    #: tenant_limits key (TENANT_LIMIT_KEYS) -> bound
    bounds: dict[str, float] = dataclasses.field(default_factory=dict)
    #: probe sets an image property may choose; None: any defined set
    probe_sets: tuple[str, ...] | None = None


def scalar_ok(kind: str, value: Any, low: float, high: float) -> bool:
    """Whether a value read from YAML is a finite number of ``kind``
    ("integer" or "number") within [low, high]. Booleans are refused: YAML
    reads ``yes`` as True, and True == 1."""
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    return ok and low <= value <= high


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
            if not value or not _glob_any(value, globs, key in UUID_KEYS):
                return False
        for attr in MAP_MATCH_KEYS:
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
    tenant_limits: TenantLimits = dataclasses.field(default_factory=TenantLimits)


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
