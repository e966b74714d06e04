"""Watch-only mode: judge and show, never notify (policy ``action: observe``).

The QEMU watchdog lets an operator choose what a firing does; a monitor
rolled out to a class of VMs must likewise be able to run beside them
for a while, showing what it would have done, before it is trusted to
have them restarted. A held report keeps the domain FAILING with the
reason in status, so an operator sees every would-be notification.
"""
from __future__ import annotations

from typing import Callable

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.policy import EffectivePolicy
from masakarimonitors_iim.verdict import ProbeResult

#: Cap of the quoted verdict reason: the hold reason stays one status line.
_REASON = 200


class ObserveGuard:
    """Holds every report of a domain whose policy says ``action: observe``."""

    name = "observe"

    def __init__(self, policy_of: Callable[[str], EffectivePolicy | None]) -> None:
        self._policy_of = policy_of

    def note(self, uuid: str, result: ProbeResult, now: float) -> None:
        """Nothing to remember: the policy alone decides."""

    def hold(self, uuid: str, name: str, result: ProbeResult, now: float) -> str | None:
        policy = self._policy_of(uuid)
        if policy is None or policy.action != "observe":
            return None
        return "observe only: would have notified (%s)" % (
            one_line(result.reason, _REASON) or "probe failed")

    def forget(self, uuid: str) -> None:
        """Nothing kept."""
