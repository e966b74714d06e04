"""What a tenant may ask for through image properties.

Image properties are set by image owners, who are often tenants. A
tenant's choices about its own VM are its business; a tenant's choices
that cost the host are everyone's problem: a round's timeout holds an
agent call (one of libvirtd's few slots per connection) for that long
when the guest hangs, so a few hung guests with a 600 s timeout turn
every other guest's verdict UNKNOWN. So each field has a direction that
costs the host nothing, which a tenant may take freely (within the
field's usual bounds), and a costly one, which a tenant may take only as
far as the operator's own value (config and rules) or the policy file's
``tenant_limits``, whichever allows more:

* ``timeout``: lower is free; higher is bounded (``max_timeout``).
* ``interval``: longer is free; shorter means more rounds
  (``min_interval``).
* ``failure_threshold``, ``success_threshold``, ``startup_grace``:
  higher is free (more patient); lower means more episodes, hence more
  notifications to the shared Masakari and more recoveries
  (``min_failure_threshold``, ...).
* ``enabled``: ``false`` is free (an unmonitored domain costs nothing);
  ``true`` over an operator's ``false`` is refused: the operator left the
  domain out of the host's probing budget on purpose.
* ``probe_set``: only the sets in ``tenant_limits.probe_sets`` if given.

A value past a bound is clamped to it, not dropped: the tenant asked for
more patience and gets the most the operator allows. Pure.
"""
from __future__ import annotations

from typing import Any, Mapping

from masakarimonitors_iim.policy.model import (
    SCALAR_FIELDS,
    TENANT_LIMIT_KEYS,
    TenantLimits,
    scalar_ok,
)

PROBE_SETS_KEY = "probe_sets"
KEYS = tuple(TENANT_LIMIT_KEYS) + (PROBE_SETS_KEY,)


class LimitProblem(ValueError):
    """A bad ``tenant_limits`` entry: the loader turns it into a PolicyError."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def parse_limits(raw: Any, probe_sets: Mapping[str, Any]) -> TenantLimits:
    """Validate the policy file's ``tenant_limits`` mapping; raises
    :class:`LimitProblem` naming the key and the fix."""
    if not isinstance(raw, dict):
        raise LimitProblem("tenant_limits", "must be a mapping, e.g. {max_timeout: 10}")
    for key in raw:
        if key not in KEYS:
            raise LimitProblem("tenant_limits.%s" % key, "unknown key; known keys are %s"
                               % ", ".join(KEYS))
    bounds: dict[str, float] = {}
    for key, (field, _) in TENANT_LIMIT_KEYS.items():
        if key not in raw:
            continue
        kind, low, high = SCALAR_FIELDS[field]
        value = raw[key]
        if not scalar_ok(kind, value, low, high):
            raise LimitProblem("tenant_limits.%s" % key, "must be a %s between %g and %g "
                               "(the bounds of %s), got %.60r" % (kind, low, high, field, value))
        bounds[key] = value if kind == "integer" else float(value)
    allowed = None
    if PROBE_SETS_KEY in raw:
        names = raw[PROBE_SETS_KEY]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise LimitProblem("tenant_limits.probe_sets", "must be a list of probe set "
                               "names ([] allows none)")
        for name in names:
            if name not in probe_sets:
                raise LimitProblem("tenant_limits.probe_sets", "%.60r is not defined under "
                                   "probe_sets (defined: %s)" % (
                                       name, ", ".join(sorted(probe_sets)) or "none"))
        allowed = tuple(names)
    return TenantLimits(bounds=bounds, probe_sets=allowed)


def bound(field: str, value: Any, operator_value: Any,
          limits: TenantLimits) -> tuple[Any, str]:
    """A tenant's parsed ``value`` for ``field`` against the operator's.

    Returns (value, "") when allowed as is, (clamped value, why) when
    clamped, and (None, why) when refused.
    """
    if field == "enabled":
        if value and not operator_value:
            return None, ("the operator disabled monitoring of this domain; an image "
                          "property may only disable it")
        return value, ""
    for key, (bounded, direction) in TENANT_LIMIT_KEYS.items():
        if bounded != field:
            continue
        limit = limits.bounds.get(key)
        if direction == "max":
            edge = operator_value if limit is None else max(operator_value, limit)
            if value > edge:
                return edge, _why(field, "above", edge, operator_value, key)
        else:
            edge = operator_value if limit is None else min(operator_value, limit)
            if value < edge:
                return edge, _why(field, "below", edge, operator_value, key)
    return value, ""


def refuse_probe_set(name: str, limits: TenantLimits) -> str:
    """Why an image property may not choose probe set ``name`` ("" if it may)."""
    if limits.probe_sets is None or name in limits.probe_sets:
        return ""
    return ("tenant_limits.probe_sets allows image properties only %s"
            % (", ".join(limits.probe_sets) or "no probe set"))


def _why(field: str, side: str, edge: Any, operator_value: Any, key: str) -> str:
    unit = " s" if SCALAR_FIELDS[field][0] == "number" else ""
    if edge == operator_value:
        whose = "the operator's value; tenant_limits.%s can widen this" % key
    else:
        whose = "tenant_limits.%s" % key
    return "an image property may not set %s %s %g%s (%s)" % (field, side, edge, unit,
                                                              whose)
