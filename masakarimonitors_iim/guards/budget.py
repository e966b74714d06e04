"""The per-VM restart budget: at most N notifications per VM per window.

A VM that fails again right after every recovery (a boot-time bug, a
corrupt disk, a licence server that is gone) would otherwise be restarted
forever, each time costing Masakari a recovery and the tenant a boot.
vSphere HA VM Monitoring stops after 3 resets in 24 h; so do we, by
default (policy ``restart_budget``, ``restart_budget_window``). Past the
budget, reports are held (the domain stays FAILING, shown in status and
logged once); a VM that stays HEALTHY for ``restart_budget_reset``
seconds earns its budget back.

What persists: the notifications themselves (outbox rows, with their
creation time, kept 7 days after delivery), so a monitor restart neither
forgets a spent budget nor invents one. Where a reset happened is kept in
memory and rebuilt from the journal (a domain HEALTHY since long enough
has reset); a restart of the monitor in the middle of a failure streak
that followed a reset forgets that reset, and the whole window counts.
The decision (:func:`decide`) is pure and table-tested.
"""
from __future__ import annotations

from typing import Callable, Protocol

from masakarimonitors_iim.journal.machine import Record, State
from masakarimonitors_iim.policy import EffectivePolicy
from masakarimonitors_iim.verdict import ProbeResult, Verdict


class Ledger(Protocol):
    """What the guard reads: the journal writer provides it."""

    def record(self, uuid: str) -> Record | None: ...

    def notified_since(self, uuid: str, since: float) -> int: ...


def span(seconds: float) -> str:
    """A window as people say it: 24 h, 10 min, 90 s."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return "%d h" % (seconds // 3600)
    if seconds >= 60 and seconds % 60 == 0:
        return "%d min" % (seconds // 60)
    return "%g s" % seconds


def count_from(now: float, window: float, reset_at: float) -> float:
    """Notifications created at or after this time count against the budget."""
    return max(now - window, reset_at)


def decide(sent: int, budget: int, window: float) -> str | None:
    """The hold reason when ``sent`` notifications spend ``budget``; 0 is no budget."""
    if budget <= 0 or sent < budget:
        return None
    return "restart budget spent: %d notification%s in %s" % (
        sent, "" if sent == 1 else "s", span(window))


class BudgetGuard:
    """Counts each VM's notifications in its window; see the module docstring."""

    name = "budget"

    def __init__(self, policy_of: Callable[[str], EffectivePolicy | None],
                 ledger: Ledger) -> None:
        self._policy_of = policy_of
        self._ledger = ledger
        #: uuid -> wall time of the first HEALTHY verdict of the current run
        self._healthy_since: dict[str, float] = {}
        #: uuid -> latest wall time the VM had been healthy long enough
        self._reset_at: dict[str, float] = {}

    def note(self, uuid: str, result: ProbeResult, now: float) -> None:
        if result.verdict is Verdict.FAILED:
            self._healthy_since.pop(uuid, None)
            return
        if result.verdict is not Verdict.HEALTHY:
            return   # UNKNOWN neither proves nor breaks health
        since = self._healthy_since.get(uuid)
        if since is None:
            # Before this verdict is applied: a record HEALTHY since long
            # ago (also across a monitor restart) has been healthy all along.
            rec = self._ledger.record(uuid)
            since = rec.since if rec is not None and rec.state is State.HEALTHY else now
            self._healthy_since[uuid] = since
        policy = self._policy_of(uuid)
        if policy is not None and now - since >= policy.restart_budget_reset:
            self._reset_at[uuid] = now

    def hold(self, uuid: str, name: str, result: ProbeResult, now: float) -> str | None:
        policy = self._policy_of(uuid)
        if policy is None or policy.restart_budget <= 0:
            return None
        since = count_from(now, policy.restart_budget_window, self._reset_at.get(uuid, 0.0))
        sent = self._ledger.notified_since(uuid, since)
        return decide(sent, policy.restart_budget, policy.restart_budget_window)

    def forget(self, uuid: str) -> None:
        self._healthy_since.pop(uuid, None)
        self._reset_at.pop(uuid, None)
