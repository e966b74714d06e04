"""A guest in a reboot loop: its boot deadline runs from the first boot of
the loop, as tables of the pure rules (journal/boot.py) and with the whole
monitor."""
from __future__ import annotations

import dataclasses

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.hypervisor.types import (
    AgentError, ErrorKind, EventKind, LifecycleEvent)
from masakarimonitors_iim.journal import boot
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State, Thresholds
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.status.model import _boot
from masakarimonitors_iim.verdict import ProbeResult
from tests.unit.fakes import FakeAgent
from tests.unit.test_monitor import A, Rig
from tests.unit.test_monitor import conf as conf  # noqa: F401  (the fixture)

D, H, FG, R = State.DISCOVERY, State.HEALTHY, State.FAILING, State.REPORTED
SILENT = dataclasses.replace(ProbeResult.failed("guest agent is not connected"),
                             agent_only=True)
OK = ProbeResult.healthy("pong")


def rec(state: State, boots: int, since: float = 100.0, failures: int = 2,
        boot_id: str = "b1") -> machine.Record:
    return dataclasses.replace(machine.new_record("u", "vm", since), state=state,
                               boots=boots, failures=failures, successes=1,
                               seen_healthy=True, episode=4, boot_id=boot_id,
                               first_failure_at=since + 5 if failures else None)


# record before, restart at 500 -> since, boots, failures kept
RESTARTS = [
    (rec(D, 1), 100.0, 2, 2),      # restart of a boot never proven healthy: a loop
    (rec(D, 3), 100.0, 4, 2),      # ... its fourth boot, still the first one's deadline
    (rec(D, 0), 500.0, 1, 0),      # DISCOVERY that began with a stop: a first boot
    (rec(H, 1, failures=0), 500.0, 1, 0),   # answered between the boots: afresh
    (rec(FG, 1), 500.0, 1, 0),
    (rec(R, 1), 500.0, 1, 0),      # reported: a new boot, as before
]


@pytest.mark.parametrize("before,since,boots,failures", RESTARTS)
def test_restart_table(before, since, boots, failures):
    new = boot.on_restarted(before, 500.0)
    assert new.state is D
    assert (new.since, new.boots, new.failures) == (since, boots, failures)
    assert new.successes == 0 and new.held == "" and new.episode == 4
    assert new.updated_at == 500.0


@pytest.mark.parametrize("event", [boot.on_restarted, boot.on_stopped])
@pytest.mark.parametrize("state", list(State))
def test_lifecycle_back_to_discovery_keeps_episode(event, state):
    # boots=0: a DISCOVERY that began with a stop (a restart of one that
    # began with a boot continues it: see test_restart_table)
    start = dataclasses.replace(rec(state, 0, failures=3), episode=2)
    new = event(start, 77.0)
    assert new.state is D
    assert (new.failures, new.successes, new.first_failure_at) == (0, 0, None)
    assert new.episode == 2 and new.since == 77.0 and new.updated_at == 77.0
    assert new.seen_healthy   # a lifetime fact, kept for status


@pytest.mark.parametrize("state", list(State))
def test_a_stop_ends_any_loop(state):
    new = boot.on_stopped(rec(state, 3), 500.0)
    assert (new.state, new.since, new.boots, new.failures) == (D, 500.0, 0, 0)


# record, boot id at watch -> since, boots
WATCHED = [
    (rec(D, 3), "b1", 100.0, 3),   # same boot: the loop stands
    (rec(D, 3), "b2", 500.0, 1),   # booted while unwatched: unknown meanwhile, afresh
    (rec(D, 0), "b1", 500.0, 1),   # last seen stopping, running now: a first boot
    (rec(D, 0, boot_id=""), "", 500.0, 1),
]


@pytest.mark.parametrize("before,boot_id,since,boots", WATCHED)
def test_watched_again_table(before, boot_id, since, boots):
    new = boot.on_watched_again(before, boot_id, None, 500.0)
    assert (new.state, new.since, new.boots) == (D, since, boots)


def loop(rec_: machine.Record, t: Thresholds, until: float, reboot_every: float,
         result: ProbeResult = SILENT) -> tuple[machine.Record, list[float]]:
    """Rounds every 10 s from 0, a reset every ``reboot_every`` s; when reported."""
    reported = []
    now = 0.0
    while now <= until:
        if now % reboot_every == 0:
            rec_ = boot.on_restarted(rec_, now)
        rec_, report = machine.on_result(rec_, result, t, now + 1)
        if report is not None:
            reported.append(now + 1)
        now += 10.0
    return rec_, reported


def test_a_loop_faster_than_the_deadline_is_reported_once_past_it():
    t = Thresholds(failure=3, success=1, boot_deadline=60)
    healthy = machine.on_result(machine.new_record("u", "vm", -10.0), OK, t, -5.0)[0]
    rec_, reported = loop(healthy, t, until=200.0, reboot_every=30.0)
    # the boot at 0 restarted at 30, 60, ...: past 60 s, the third FAILED
    # in a row. A reset after the report (Masakari has not stopped it
    # yet) is a first boot again, as before: a whole deadline later, 151.
    assert reported == [61.0, 151.0]
    assert rec_.episode == 2


def test_a_guest_answering_between_its_resets_is_never_reported():
    t = Thresholds(failure=3, success=1, boot_deadline=60)
    r = machine.on_result(machine.new_record("u", "vm", -10.0), OK, t, -5.0)[0]
    for now in range(0, 600, 10):
        if now % 30 == 0:
            r = boot.on_restarted(r, now)
        r, report = machine.on_result(r, OK if now % 30 == 20 else SILENT, t, now + 1)
        assert report is None
        assert r.boots == 1          # each boot a first one


def test_masakari_recovery_after_a_loop_report_starts_afresh():
    """REPORTED, then Masakari stops and starts the instance: the new boot
    gets its whole deadline again."""
    t = Thresholds(failure=3, success=1, boot_deadline=60)
    healthy = machine.on_result(machine.new_record("u", "vm", -10.0), OK, t, -5.0)[0]
    r, reported = loop(healthy, t, until=70.0, reboot_every=30.0)
    assert r.state is R and reported == [61.0]
    r = boot.on_stopped(r, 100.0)
    r = boot.on_restarted(r, 120.0)
    assert (r.state, r.since, r.boots, r.failures) == (D, 120.0, 1, 0)
    for now in range(121, 180, 10):                  # within 60 s of the start
        r, report = machine.on_result(r, SILENT, t, float(now))
        assert report is None


def test_the_store_keeps_the_count(tmp_path):
    with Database(str(tmp_path / "j.sqlite")) as db:
        JournalStore(db).save(rec(D, 3))
        assert JournalStore(db).get("u") == rec(D, 3)


@pytest.mark.parametrize("boots,now,text", [
    (1, 130.0, "booting, deadline in 30 s"),
    (4, 130.0, "booting (3 restarts), deadline in 30 s"),
    (4, 200.0, "never came up (3 restarts): its agent answered in an earlier boot"),
])
def test_status_shows_the_loop(boots, now, text):
    assert _boot(rec(D, boots), 60.0, "seen-before", now) == text


# -- with the whole monitor ---------------------------------------------------

@pytest.fixture
def looping(conf, tmp_path, monkeypatch):  # noqa: F811
    # An agent that is not connected answers nothing, guest-info neither
    # (the shared fake answers guest-info always, which would end the
    # disconnect grace at the first round of each boot).
    command = FakeAgent.command

    def not_connected(self, name, arguments=None, timeout=2.0):
        if self.hv.behaviour.get(self.domain_uuid) is ErrorKind.AGENT_NOT_CONNECTED:
            self.hv.calls.append((self.domain_uuid, name))
            raise AgentError(ErrorKind.AGENT_NOT_CONNECTED, "fake not connected")
        return command(self, name, arguments, timeout)
    monkeypatch.setattr(FakeAgent, "command", not_connected)
    path = tmp_path / "iim-policy.yaml"
    path.write_text("version: 1\nrules:\n  - name: all\n    boot_deadline: 60\n")
    conf.set_override("policy_file", str(path), group="introspectiveinstancemonitor")
    conf.set_override("agent_disconnect_grace", 120, group="introspectiveinstancemonitor")
    return Rig(conf)


def run(rig: Rig, seconds: int, reboot_every: int | None, t0: int) -> list[int]:
    """Rounds every 10 s; a REBOOTED event every ``reboot_every`` s (from
    ``t0``); the seconds (since ``t0``) at which a notification went out."""
    sent_at = []
    for t in range(0, seconds, 10):
        if reboot_every and t % reboot_every == 0:
            rig.mon.handle_event(LifecycleEvent(EventKind.REBOOTED, A, "vm-a"))
        before = len(rig.notifier.sent)
        rig.mon.step(wait=False)
        rig.mon.step(wait=False)
        rig.deliver()
        if len(rig.notifier.sent) > before:
            sent_at.append(t)
        rig.clock.t += 10.0
        rig.wall.offset += 10.0
    return sent_at


def test_monitor_reports_a_reboot_loop_once_past_the_first_boots_deadline(looping):
    """A reset every 30 s, boot deadline 60 s, disconnect grace 120 s: the
    grace and the deadline both ran from the first reset, so it is
    reported once, on the third FAILED round past 60 s (rounds every 10 s;
    a reset moves the next round to 1 s after it, so none runs at 60 or
    90: FAILED at 70, 80, 100). Before, each reset re-armed the 120 s
    grace and restarted the deadline: never reported."""
    rig = looping
    rig.hv.add(A, "vm-a", boot_id="b1")
    run(rig, 20, None, 0)
    assert rig.state(A) is State.HEALTHY
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    sent_at = run(rig, 150, 30, 0)
    assert sent_at == [100]
    [row] = rig.outbox.rows()
    assert "within 60 s of boot" in row.reason
    # the reset at 120, after the report, is a first boot again (as before)
    rec_ = rig.journal.get(A)
    assert (rec_.state, rec_.boots, rec_.episode) == (State.DISCOVERY, 1, 1)


def test_monitor_loop_is_visible_while_booting(looping):
    rig = looping
    rig.hv.add(A, "vm-a", boot_id="b1")
    run(rig, 20, None, 0)
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    run(rig, 40, 30, 0)                          # resets at 0 and 30
    rec_ = rig.journal.get(A)
    assert (rec_.state, rec_.boots) == (State.DISCOVERY, 2)
    assert rig.notifier.sent == []
    w = rig.mon.registry.watched[A]
    # the grace no longer reaches past the first boot's deadline
    assert w.disconnect_grace_until == w.started_at + 60


def test_monitor_recovery_by_stop_and_start_starts_afresh(looping):
    rig = looping
    rig.hv.add(A, "vm-a", boot_id="b1")
    run(rig, 20, None, 0)
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    assert run(rig, 110, 30, 0) == [100]
    # Masakari's recovery: the instance is stopped and started again
    rig.mon.handle_event(LifecycleEvent(EventKind.STOPPED, A, "vm-a"))
    rig.mon.step(wait=False)
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    rig.hv.behaviour[A] = "ok"
    run(rig, 20, None, 0)
    assert rig.state(A) is State.HEALTHY
    assert len(rig.notifier.sent) == 1
