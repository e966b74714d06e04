"""The one shape every guard has, so the journal writer asks them alike.

The state machine decides *that* an episode is to be reported; a guard
decides whether to *hold* that report for now: the VM is in watch-only
mode, its restart budget is spent, its guest is still doing I/O while
its agent is silent, or too many guests of this host fail at once (the
host, not the guests, is sick). A held report is not lost and not
queued: the domain stays FAILING with its streak (a boot past its
deadline stays DISCOVERY), the hold's reason is kept in the journal for
status, and the next FAILED round asks the
guards again, so a hold that lifts reports at once if the guest still
fails, and a guest that recovers meanwhile is never reported.

Guards are called on the scheduler thread only, for every applied
verdict (:meth:`Guard.note`) and when a report is due (:meth:`Guard.hold`);
both must be cheap and never block (no RPC, no HTTP).
"""
from __future__ import annotations

from typing import Protocol

from masakarimonitors_iim.verdict import ProbeResult


class Guard(Protocol):
    """A reason to hold a due report; see the module docstring."""

    #: short and stable, for logs, metrics and status ("observe", "budget", ...)
    name: str

    def note(self, uuid: str, result: ProbeResult, now: float) -> None:
        """Every verdict applied for a watched domain (``now`` is wall time)."""

    def hold(self, uuid: str, name: str, result: ProbeResult, now: float) -> str | None:
        """A report is due for this domain: a one-line reason to hold it, or
        None. ``result.reason`` is the report's reason (for a boot past its
        deadline, the boot's)."""

    def forget(self, uuid: str) -> None:
        """The domain is no longer watched: drop what is kept for it."""
