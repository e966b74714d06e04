"""The answer to "why is this VM watched the way it is?".

An operator must never have to guess which layer (config, a rule, a
flavor extra spec, an image property) supplied a value, so
``masakari-iim policy show`` prints every field next to its source.
"""
from __future__ import annotations

import json

from masakarimonitors_iim.policy.model import FIELDS, EffectivePolicy, ProbeSpec


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
        elif field in ("interval", "timeout", "startup_grace", "boot_deadline",
                       "restart_budget_window", "restart_budget_reset"):
            shown = "%g s" % value
        elif field == "corroborate":
            shown = "yes" if value else "no"
        elif field == "restart_budget" and value == 0:
            shown = "0 (no budget: every episode is notified)"
        else:
            shown = str(value)
        lines.append("%s: %s  [%s]" % (field, shown, policy.sources.get(field, "?")))
    lines.append("matched rules: %s" % (", ".join(policy.matched_rules) or "none"))
    lines.extend("note: %s" % note for note in policy.notes)
    return lines


def _probe_text(spec: ProbeSpec) -> str:
    """Parameters as sorted JSON: stable across runs, so two outputs can
    be diffed, and unambiguous about types (30 vs "30")."""
    if not spec.params:
        return spec.name
    return "%s %s" % (spec.name, json.dumps(spec.params, sort_keys=True, default=str))
