"""The restart budget and watch-only mode, as tables and with fakes."""
from __future__ import annotations

import dataclasses

import pytest

from masakarimonitors_iim.guards import budget
from masakarimonitors_iim.guards.budget import BudgetGuard
from masakarimonitors_iim.guards.observe import ObserveGuard
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.policy.model import EffectivePolicy, ProbeSpec
from masakarimonitors_iim.verdict import ProbeResult

U = "u-1"
OK = ProbeResult.healthy("pong")
BAD = ProbeResult.failed("agent timeout")
UNK = ProbeResult.unknown("paused")


def policy(**kw):
    base = dict(enabled=True, probes=(ProbeSpec("ping"),), interval=10.0, timeout=2.0,
                failure_threshold=3, success_threshold=1, startup_grace=0.0)
    base.update(kw)
    return EffectivePolicy(**base)


@pytest.mark.parametrize("sent,limit,window,reason", [
    (0, 3, 86400, None),
    (2, 3, 86400, None),
    (3, 3, 86400, "restart budget spent: 3 notifications in 24 h"),
    (4, 3, 86400, "restart budget spent: 4 notifications in 24 h"),
    (1, 1, 600, "restart budget spent: 1 notification in 10 min"),
    (1, 1, 90, "restart budget spent: 1 notification in 90 s"),
    (50, 0, 86400, None),                      # 0: no budget
])
def test_decide_table(sent, limit, window, reason):
    assert budget.decide(sent, limit, window) == reason


@pytest.mark.parametrize("now,window,reset_at,start", [
    (100_000.0, 86400.0, 0.0, 13_600.0),       # the window
    (100_000.0, 86400.0, 50_000.0, 50_000.0),  # a reset inside it wins
    (100_000.0, 86400.0, 1_000.0, 13_600.0),   # a reset before it is moot
])
def test_count_from_table(now, window, reset_at, start):
    assert budget.count_from(now, window, reset_at) == start


class Ledger:
    def __init__(self):
        self.sent: list[float] = []
        self.rec: machine.Record | None = None

    def record(self, uuid):
        return self.rec

    def notified_since(self, uuid, since):
        return sum(1 for t in self.sent if t >= since)


def guard(pol):
    ledger = Ledger()
    return BudgetGuard(lambda uuid: pol, ledger), ledger


def test_past_the_budget_it_holds_and_the_window_lets_go():
    g, ledger = guard(policy(restart_budget=2, restart_budget_window=1000.0))
    ledger.sent = [100.0, 200.0]
    assert g.hold(U, "vm", BAD, 300.0) == "restart budget spent: 2 notifications in 1000 s"
    assert g.hold(U, "vm", BAD, 1150.0) is None     # the first left the window


def test_healthy_long_enough_resets_and_unknown_or_failed_do_not():
    g, ledger = guard(policy(restart_budget=1, restart_budget_reset=100.0))
    ledger.sent = [10.0]
    g.note(U, OK, 20.0)
    g.note(U, UNK, 80.0)
    g.note(U, OK, 110.0)                        # 90 s healthy: not yet
    assert g.hold(U, "vm", BAD, 115.0) is not None
    g.note(U, BAD, 115.0)
    g.note(U, OK, 130.0)                         # a failure restarted the clock
    g.note(U, OK, 200.0)
    assert g.hold(U, "vm", BAD, 210.0) is not None
    g.note(U, OK, 230.0)                         # 100 s healthy since 130
    assert g.hold(U, "vm", BAD, 240.0) is None


def test_health_before_a_monitor_restart_counts_from_the_journal():
    g, ledger = guard(policy(restart_budget=1, restart_budget_reset=100.0))
    ledger.sent = [10.0]
    ledger.rec = dataclasses.replace(machine.new_record(U, "vm", 0.0), state=State.HEALTHY,
                                     since=20.0)
    g.note(U, OK, 500.0)                         # HEALTHY since 20 in the journal
    assert g.hold(U, "vm", BAD, 510.0) is None


def test_no_policy_or_no_budget_never_holds_and_forget_drops_the_reset():
    g, ledger = guard(None)
    ledger.sent = [1.0] * 10
    assert g.hold(U, "vm", BAD, 5.0) is None
    g2, ledger2 = guard(policy(restart_budget=1, restart_budget_reset=0.0))
    ledger2.sent = [1.0]
    g2.note(U, OK, 2.0)
    assert g2.hold(U, "vm", BAD, 3.0) is None
    g2.forget(U)
    assert g2.hold(U, "vm", BAD, 3.0) is not None


@pytest.mark.parametrize("action,held", [("notify", None), ("observe", (
    "observe only: would have notified (agent timeout)"))])
def test_observe_guard_table(action, held):
    g = ObserveGuard(lambda uuid: policy(action=action))
    g.note(U, BAD, 1.0)
    assert g.hold(U, "vm", BAD, 1.0) == held
    assert ObserveGuard(lambda uuid: None).hold(U, "vm", BAD, 1.0) is None
