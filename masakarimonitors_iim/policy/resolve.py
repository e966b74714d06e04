"""Resolution: the one policy a domain is monitored with.

Pure apart from one thing: each probe's class is asked for notes about
its parameters (:meth:`Probe.policy_notes`), found through a lookup that
is cached for the life of the process. No I/O per call and no probe is
instantiated, so :func:`resolve` can be re-run for every domain after
every reload. It never raises for bad instance metadata: that is set by
people other than the host's operator (image owners are often tenants),
and one instance's metadata must not stop the monitoring of the host.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor.types import DomainInfo
from masakarimonitors_iim.policy.model import (
    BOOL_FIELDS,
    CHOICE_FIELDS,
    DEFAULT_INSTANCE_KEYS,
    FIELDS,
    OPERATOR_ONLY_FIELDS,
    INSTANCE_KEY_ORIGINS,
    INSTANCE_KEY_PREFIX,
    SCALAR_FIELDS,
    Defaults,
    EffectivePolicy,
    PolicyFile,
    ProbeSpec,
    TenantLimits,
)
from masakarimonitors_iim.policy.tenant import bound, refuse_probe_set
from masakarimonitors_iim.probes.base import probe_class

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

_ORIGIN_LABEL = {"image_properties": "image property",
                 "flavor_extra_specs": "flavor extra spec"}

#: Longest shown excerpt of an ignored per-instance value: enough to
#: recognise it, not enough to flood a status line.
_SHOWN_VALUE_CHARS = 60


def resolve(defaults: Defaults, domain: DomainInfo,
            policy_file: PolicyFile | None = None) -> EffectivePolicy:
    """The policy for ``domain``: defaults, then matching rules in file
    order, then per-instance keys. Pure (see the module docstring for the
    cached probe lookup), and never raises for bad instance metadata: it
    is ignored and noted instead."""
    values: dict[str, Any] = {f: getattr(defaults, f) for f in FIELDS}
    sources = {f: "config" for f in FIELDS}
    matched: list[str] = []
    notes: list[str] = []
    probe_sets = policy_file.probe_sets if policy_file is not None else {}
    allowed = policy_file.instance_keys if policy_file is not None else DEFAULT_INSTANCE_KEYS
    limits = policy_file.tenant_limits if policy_file is not None else TenantLimits()

    if policy_file is not None:
        for rule in policy_file.rules:
            if rule.match.matches(domain):
                matched.append(rule.name)
                for field, value in rule.values.items():
                    values[field] = value
                    sources[field] = rule.source(field)

    # What the operator chose (config and rules): tenants' values are
    # bounded against it, not against each other's or the flavor's.
    operator = dict(values)
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
                shown = one_line(metadata[key], _SHOWN_VALUE_CHARS)
                clamped = ""
                if not problem and origin == "image_properties":
                    if field in OPERATOR_ONLY_FIELDS:
                        problem = ("only the operator (a policy rule or a flavor extra "
                                   "spec) may set %s: an image property could switch "
                                   "its VM's reporting off unseen" % field)
                    elif field == "probe_set":
                        problem = refuse_probe_set(str(metadata[key]).strip(), limits)
                    else:
                        value, clamped = bound(field, value, operator[field], limits)
                        problem = clamped if value is None else ""
                if problem:
                    notes.append("ignored %s=%r: %s" % (where, shown, problem))
                    continue
                if clamped:
                    notes.append("clamped %s=%r to %g: %s" % (where, shown, value, clamped))
                    where += " (clamped)"
                if field == "probe_set":
                    values["probes"] = value
                    sources["probes"] = "%s (probe_set %r)" % (where, str(metadata[key]).strip())
                else:
                    values[field] = value
                    sources[field] = where

    notes.extend(_probe_notes(values["probes"], values["interval"], values["timeout"]))
    return EffectivePolicy(**values, sources=sources, matched_rules=tuple(matched),
                           notes=tuple(notes))


def _instance_value(field: str, raw: Any, probe_sets: Mapping[str, tuple[ProbeSpec, ...]]
                    ) -> tuple[Any, str]:
    """Parse one per-instance value: (value, "") or (None, problem)."""
    text = str(raw).strip()
    if field in CHOICE_FIELDS:
        if text in CHOICE_FIELDS[field]:
            return text, ""
        return None, "must be one of %s" % ", ".join(CHOICE_FIELDS[field])
    if field in BOOL_FIELDS:
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
        INSTANCE_KEY_PREFIX + f
        for f in (*BOOL_FIELDS, *CHOICE_FIELDS, "probe_set", *SCALAR_FIELDS))


def _probe_notes(probes: tuple[ProbeSpec, ...], interval: float,
                 timeout: float) -> list[str]:
    """Each probe's own warnings about its parameters against the final
    interval and timeout; only the probe knows what its parameters mean.

    A probe whose plugin cannot be found gets no notes: the loader has
    already refused such a name in the policy file. A plugin's bug in
    ``policy_notes`` becomes a note rather than an exception, because
    resolution runs for every domain and must not stop the monitor.
    """
    notes: list[str] = []
    for spec in probes:
        cls = probe_class(spec.name)
        if cls is None:
            continue
        try:
            notes.extend(cls.policy_notes(spec.params, interval, timeout))
        except Exception as err:  # a third-party plugin's bug
            notes.append("probe %r: checking its parameters against the policy "
                         "failed: %s" % (spec.name, one_line(err)))
    return notes
