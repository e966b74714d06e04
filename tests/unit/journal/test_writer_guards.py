"""The journal writer: guards holding due reports, records kept in memory."""
from __future__ import annotations

import dataclasses

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State, Thresholds
from masakarimonitors_iim.monitor.results import JournalWriter
from masakarimonitors_iim.verdict import ProbeResult

U = "u-1"
OK = ProbeResult.healthy("pong")
BAD = ProbeResult.failed("agent timeout")
UNK = ProbeResult.unknown("paused")
T = Thresholds(failure=2, success=1)


class Guard:
    def __init__(self, name="test", reason=None, broken=False):
        self.name = name
        self.reason = reason
        self.broken = broken
        self.noted: list[tuple[str, str]] = []
        self.asked = 0
        self.forgotten: list[str] = []

    def note(self, uuid, result, now):
        self.noted.append((uuid, result.verdict.value))

    def hold(self, uuid, name, result, now):
        self.asked += 1
        if self.broken:
            raise RuntimeError("boom")
        return self.reason

    def forget(self, uuid):
        self.forgotten.append(uuid)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        self.t += 1.0
        return self.t


@pytest.fixture
def db(tmp_path):
    with Database(str(tmp_path / "j.db")) as d:
        yield d


def writer(db, *guards):
    queued = []
    w = JournalWriter(db, hostname="h", event="QEMU_GUEST_AGENT_ERROR",
                      on_queued=lambda: queued.append(1), wall=Clock(), guards=guards)
    return w, queued


def healthy(w):
    w.watched(U, "vm1")
    w.verdict(U, "vm1", OK, T)
    assert w.record(U).state is State.HEALTHY


def test_a_held_report_stays_failing_with_its_streak_and_reason(db):
    g = Guard(reason="observe only: would have notified")
    w, queued = writer(db, g)
    healthy(w)
    w.verdict(U, "vm1", BAD, T)
    w.verdict(U, "vm1", BAD, T)
    rec = w.journal.get(U)
    assert (rec.state, rec.failures, rec.episode, rec.held) == (
        State.FAILING, 2, 0, "observe only: would have notified")
    assert w.outbox.rows() == [] and queued == []
    # the next FAILED round asks again; UNKNOWN neither asks nor clears
    w.verdict(U, "vm1", UNK, T)
    assert g.asked == 1 and w.journal.get(U).held
    w.verdict(U, "vm1", BAD, T)
    assert g.asked == 2 and w.journal.get(U).failures == 3


def test_a_hold_that_lifts_reports_at_once_and_clears_the_reason(db):
    g = Guard(reason="budget spent")
    w, queued = writer(db, g)
    healthy(w)
    w.verdict(U, "vm1", BAD, T)
    w.verdict(U, "vm1", BAD, T)
    g.reason = None
    w.verdict(U, "vm1", BAD, T)
    rec = w.journal.get(U)
    assert (rec.state, rec.episode, rec.held) == (State.REPORTED, 1, "")
    [row] = w.outbox.rows()
    assert row.episode == 1 and queued == [1]


def test_a_guest_that_recovers_while_held_is_never_reported(db):
    w, queued = writer(db, Guard(reason="storm"))
    healthy(w)
    for r in (BAD, BAD, BAD, OK):
        w.verdict(U, "vm1", r, T)
    rec = w.journal.get(U)
    assert (rec.state, rec.failures, rec.held) == (State.HEALTHY, 0, "")
    assert w.outbox.rows() == [] and queued == []


def test_every_verdict_is_noted_by_every_guard_and_unwatch_forgets(db):
    a, b = Guard("a"), Guard("b")
    w, _ = writer(db, a, b)
    healthy(w)
    w.verdict(U, "vm1", UNK, T)
    assert a.noted == b.noted == [(U, "HEALTHY"), (U, "UNKNOWN")]
    w.unwatched(U)
    assert a.forgotten == b.forgotten == [U]


def test_the_first_guard_that_holds_wins_and_a_broken_guard_holds_nothing(db):
    broken, holding = Guard("broken", broken=True), Guard("second", reason="why")
    w, _ = writer(db, broken, holding)
    healthy(w)
    w.verdict(U, "vm1", BAD, T)
    w.verdict(U, "vm1", BAD, T)
    assert w.journal.get(U).held == "why"
    w2, queued = writer(db, Guard("broken", broken=True))
    w2.verdict(U, "vm1", BAD, T)
    assert w2.journal.get(U).state is State.REPORTED and queued == [1]


def test_a_hold_is_logged_once_per_guard_not_every_round(db, caplog):
    w, _ = writer(db, Guard("observe", reason="observe only"))
    healthy(w)
    for _ in range(5):
        w.verdict(U, "vm1", BAD, T)
    held = [r for r in caplog.records if "held by guard observe" in r.getMessage()]
    assert len(held) == 1


def test_records_are_read_once_and_healthy_rounds_write_nothing(db, monkeypatch):
    w, _ = writer(db)
    healthy(w)
    reads, writes = [], []
    monkeypatch.setattr(w.journal, "get", lambda *a: reads.append(a))
    monkeypatch.setattr(w.journal, "all", lambda *a: reads.append(a) or [])
    real_save = w.journal.save
    monkeypatch.setattr(w.journal, "save",
                        lambda rec, tx=None: writes.append(rec) or real_save(rec, tx))
    for _ in range(10):
        w.verdict(U, "vm1", OK, T)
    assert reads == [] and writes == []
    w.verdict(U, "vm1", BAD, T)
    assert [r.state for r in writes] == [State.FAILING]


def test_a_failed_write_leaves_the_memory_copy_unchanged(db, monkeypatch):
    w, _ = writer(db)
    healthy(w)

    def broken(rec, tx=None):
        raise RuntimeError("disk full")
    monkeypatch.setattr(w.journal, "save", broken)
    with pytest.raises(RuntimeError):
        w.verdict(U, "vm1", BAD, T)
    assert w.record(U).state is State.HEALTHY


# before state, failures, episode -> what a held report leaves
HELD = [
    (State.HEALTHY, 0, 0, State.FAILING, 1, 0),
    (State.FAILING, 1, 2, State.FAILING, 2, 2),
    (State.FAILING, 7, 2, State.FAILING, 8, 2),
]


@pytest.mark.parametrize("state,failures,episode,want,want_failures,want_episode", HELD)
def test_on_held_table(state, failures, episode, want, want_failures, want_episode):
    before = dataclasses.replace(machine.new_record(U, "vm1", 0.0), state=state,
                                 failures=failures, episode=episode, seen_healthy=True,
                                 since=5.0)
    due, report = machine.on_result(before, BAD, T if failures else Thresholds(1, 1), 10.0)
    assert report is not None
    held = machine.on_held(before, due, "why")
    assert (held.state, held.failures, held.episode, held.held) == (
        want, want_failures, want_episode, "why")
    assert held.since == (5.0 if state is State.FAILING else 10.0)


class Asked(Guard):
    """Remembers the reason each hold() was asked with."""

    def __init__(self, reason=None):
        super().__init__(reason=reason)
        self.reasons: list[str] = []

    def hold(self, uuid, name, result, now):
        self.reasons.append(result.reason)
        return super().hold(uuid, name, result, now)


def test_a_held_boot_report_keeps_its_boot_reason_until_it_goes_out(db):
    """A boot past its deadline, held (watch-only, storm, activity): the
    guards see the boot's reason, the domain stays DISCOVERY (status keeps
    "never came up"), and the report that finally goes out says it was
    the boot, not just "agent timeout"."""
    boot = Thresholds(failure=2, success=1, boot_deadline=10)
    g = Asked(reason="storm guard: holding")
    w, queued = writer(db, g)
    healthy(w)
    w.restarted(U)                                  # boot seen at t
    w.verdict(U, "vm1", BAD, boot)                  # hung since its boot
    w._wall.t += 20                                  # past its deadline
    w.verdict(U, "vm1", BAD, boot)
    rec = w.journal.get(U)
    assert (rec.state, rec.held, rec.episode) == (
        State.DISCOVERY, "storm guard: holding", 0)
    assert "within 10 s of boot" in g.reasons[-1]
    w.verdict(U, "vm1", UNK, boot)                  # UNKNOWN keeps the hold
    assert w.journal.get(U).held == "storm guard: holding"
    g.reason = None                                 # the hold lifts
    w.verdict(U, "vm1", BAD, boot)
    rec = w.journal.get(U)
    assert (rec.state, rec.held, rec.episode) == (State.REPORTED, "", 1)
    [row] = w.outbox.rows()
    assert "within 10 s of boot" in row.reason and queued == [1]


def test_a_held_boot_that_answers_drops_its_hold(db):
    boot = Thresholds(failure=2, success=2, boot_deadline=10)
    w, _ = writer(db, Guard(reason="observe only"))
    healthy(w)
    w.restarted(U)
    w.verdict(U, "vm1", BAD, boot)
    w._wall.t += 20
    w.verdict(U, "vm1", BAD, boot)
    assert w.journal.get(U).held == "observe only"
    w.verdict(U, "vm1", OK, boot)
    rec = w.journal.get(U)
    assert (rec.state, rec.held) == (State.DISCOVERY, "")


def test_a_hold_whose_write_failed_is_still_logged_once_written(db, monkeypatch, caplog):
    w, _ = writer(db, Guard("observe", reason="observe only"))
    healthy(w)
    w.verdict(U, "vm1", BAD, T)
    real_save = w.journal.save

    def broken(rec, tx=None):
        raise RuntimeError("disk full")
    monkeypatch.setattr(w.journal, "save", broken)
    with pytest.raises(RuntimeError):
        w.verdict(U, "vm1", BAD, T)               # due, held, not written
    monkeypatch.setattr(w.journal, "save", real_save)
    w.verdict(U, "vm1", BAD, T)                   # due again, held, written
    assert w.journal.get(U).held == "observe only"
    held = [r for r in caplog.records if "held by guard observe" in r.getMessage()]
    assert len(held) == 1


def test_a_report_that_goes_out_after_a_hold_says_which_guard_held_it(db, caplog):
    g = Guard("storm", reason="storm guard: holding")
    w, _ = writer(db, g)
    healthy(w)
    w.verdict(U, "vm1", BAD, T)
    w.verdict(U, "vm1", BAD, T)
    g.reason = None
    w.verdict(U, "vm1", BAD, T)
    [line] = [r.getMessage() for r in caplog.records if "reported" in r.getMessage()]
    assert "held before by guard storm" in line


def test_the_budget_counts_this_vms_notifications_in_the_window_but_not_dead_letters(db):
    w, _ = writer(db)
    healthy(w)
    for _ in range(3):                            # three episodes of U
        w.verdict(U, "vm1", BAD, T)
        w.verdict(U, "vm1", BAD, T)
        w.restarted(U)
        w.verdict(U, "vm1", OK, T)
    w.watched("u-2", "vm2")
    w.verdict("u-2", "vm2", OK, T)
    w.verdict("u-2", "vm2", BAD, T)
    w.verdict("u-2", "vm2", BAD, T)               # another VM's row
    rows = sorted(w.outbox.rows(), key=lambda r: r.id)
    mine = [r for r in rows if r.notification.instance_uuid == U]
    assert len(mine) == 3 and len(rows) == 4
    created = [r[0] for r in db.query(
        "SELECT created_at FROM outbox WHERE instance_uuid = ? ORDER BY id", (U,))]
    assert w.notified_since(U, 0.0) == 3
    assert w.notified_since(U, created[1]) == 2   # at or after
    with db.transaction() as tx:
        tx.execute("UPDATE outbox SET status = 'dead' WHERE id = ?", (mine[2].id,))
    assert w.notified_since(U, 0.0) == 2          # a dead letter restarted nothing
