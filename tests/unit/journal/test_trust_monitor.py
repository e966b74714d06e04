"""Issue 8's journal rows with the whole monitor and the hypervisor fake:
boot deadline, restarts the monitor did not see, stale streaks, watch-only
mode and the restart budget."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.hypervisor.types import ErrorKind, EventKind, LifecycleEvent
from masakarimonitors_iim.journal.machine import State
from tests.unit.test_monitor import A, Rig
from tests.unit.test_monitor import conf as conf  # noqa: F401  (the fixture)

BOOT = "masakari_iim:boot_deadline"


@pytest.fixture
def policy(conf, tmp_path):  # noqa: F811
    def write(text):
        path = tmp_path / "iim-policy.yaml"
        path.write_text("version: 1\nrules:\n  - name: all\n" + text)
        conf.set_override("policy_file", str(path), group="introspectiveinstancemonitor")
        conf.set_override("agent_disconnect_grace", 0, group="introspectiveinstancemonitor")
        return conf
    return write


def rounds(rig, n, step=10.0):
    """n rounds, ``step`` seconds apart on both clocks, then deliver."""
    for _ in range(n):
        rig.mon.step(wait=False)
        rig.mon.step(wait=False)
        rig.clock.t += step
        rig.wall.offset += step
    rig.deliver()


def test_a_reboot_into_a_hang_is_reported_once_after_the_deadline(policy):
    rig = Rig(policy("    boot_deadline: 60\n"))
    rig.hv.add(A, "vm-a", boot_id="b1")
    rounds(rig, 2)
    assert rig.state(A) is State.HEALTHY
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    rounds(rig, 5)                       # 50 s: booting, never reported
    assert rig.state(A) is State.DISCOVERY and rig.notifier.sent == []
    rounds(rig, 10)                      # past 60 s: once, then never again
    assert rig.state(A) is State.REPORTED
    assert len(rig.notifier.sent) == 1
    [row] = rig.outbox.rows()
    assert "within 60 s of boot" in row.reason
    assert "it answered in an earlier boot" in row.reason


def test_a_guest_never_seen_answering_is_never_reported(policy):
    rig = Rig(policy("    boot_deadline: 30\n"))
    rig.hv.add(A, "vm-a", boot_id="b1")
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rounds(rig, 20)
    assert rig.state(A) is State.DISCOVERY and rig.notifier.sent == []


def test_boot_report_always_reports_a_guest_never_seen_answering(policy):
    rig = Rig(policy("    boot_deadline: 30\n    boot_report: always\n"))
    rig.hv.add(A, "vm-a", boot_id="b1")
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rounds(rig, 20)
    assert len(rig.notifier.sent) == 1
    assert "it never answered" in rig.outbox.rows()[0].reason


def test_a_restart_the_monitor_did_not_see_is_a_new_boot(policy):
    rig = Rig(policy("    boot_deadline: 60\n"))
    rig.hv.add(A, "vm-a", boot_id="b1")
    rounds(rig, 2)
    assert rig.journal.get(A).boot_id == "b1"
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rounds(rig, 2)                        # FAILING 2 of 3
    rig.db.close()
    # monitor down; the guest is restarted and boots into a hang
    rig.hv.set_boot_id(A, "b2")
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rig.open()
    rounds(rig, 1)
    rec = rig.journal.get(A)
    assert (rec.state, rec.boot_id, rec.failures) == (State.DISCOVERY, "b2", 1)
    assert rig.notifier.sent == []        # the old 2-of-3 is not continued
    rounds(rig, 8)
    assert len(rig.notifier.sent) == 1
    assert "within 60 s of boot" in rig.outbox.rows()[0].reason


def test_a_boot_seen_only_in_a_listing_restarts_the_journal(policy):
    rig = Rig(policy("    boot_deadline: 600\n"))
    rig.hv.add(A, "vm-a", boot_id="b1")
    rounds(rig, 2)
    rig.hv.set_boot_id(A, "b2")          # STARTED event lost
    rig.mon._inventory_due = 0.0
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rounds(rig, 1)
    assert rig.state(A) is State.DISCOVERY
    assert rig.journal.get(A).boot_id == "b2"


def test_a_streak_saved_long_ago_is_not_continued(policy):
    rig = Rig(policy(""))
    rig.hv.add(A, "vm-a", boot_id="b1")
    rounds(rig, 1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rounds(rig, 2)
    assert (rig.state(A), rig.journal.get(A).failures) == (State.FAILING, 2)
    rig.db.close()
    rig.wall.offset += 3600               # the monitor was down an hour
    rig.clock.t += 3600
    rig.open()
    rounds(rig, 1)
    assert (rig.state(A), rig.journal.get(A).failures) == (State.FAILING, 1)
    assert rig.notifier.sent == []


def test_observe_mode_never_notifies_and_says_what_it_would_have_done(policy):
    rig = Rig(policy("    action: observe\n"))
    rig.hv.add(A, "vm-a")
    rounds(rig, 1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rounds(rig, 10)
    rec = rig.journal.get(A)
    assert rec.state is State.FAILING and rec.failures == 10
    assert rec.held.startswith("observe only: would have notified (guest agent did not")
    assert rig.notifier.sent == [] and rig.outbox.rows() == []
    rig.hv.behaviour[A] = "ok"
    rounds(rig, 1)
    assert (rig.state(A), rig.journal.get(A).held) == (State.HEALTHY, "")


def test_a_spent_restart_budget_holds_the_next_episode(policy):
    rig = Rig(policy("    restart_budget: 1\n    restart_budget_reset: 3600\n"))
    rig.hv.add(A, "vm-a")
    rounds(rig, 1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rounds(rig, 3)
    assert len(rig.notifier.sent) == 1
    rig.hv.behaviour[A] = "ok"
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    rounds(rig, 2)
    assert rig.state(A) is State.HEALTHY
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rounds(rig, 6)
    rec = rig.journal.get(A)
    assert rec.state is State.FAILING
    assert rec.held == "restart budget spent: 1 notification in 24 h"
    assert len(rig.notifier.sent) == 1


def test_the_budget_comes_back_after_a_stable_healthy_period(policy):
    rig = Rig(policy("    restart_budget: 1\n    restart_budget_reset: 100\n"))
    rig.hv.add(A, "vm-a")
    rounds(rig, 1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rounds(rig, 3)
    rig.hv.behaviour[A] = "ok"
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    rounds(rig, 15)                        # 150 s healthy > 100 s
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rounds(rig, 3)
    assert len(rig.notifier.sent) == 2
    assert rig.journal.get(A).held == ""
