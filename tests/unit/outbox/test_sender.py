"""The outbox sender with a scripted notifier, a real store and a fake clock."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

from oslo_config import cfg
import pytest

from masakarimonitors_iim.common.backoff import next_delay
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.notifier.base import DeliveryOutcome
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.notifier.base import HeldNotification
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.notifier.base import NotifierError
from masakarimonitors_iim.outbox import sender as sender_mod
from masakarimonitors_iim.outbox.sender import LEASE_MARGIN, Sender
from masakarimonitors_iim.outbox.store import OutboxStore
from tests.unit.outbox.helpers import save

MASAKARI_UUID = "0f7e6c58-0000-4000-8000-000000000001"
OK = DeliveryOutcome(DeliveryStatus.DELIVERED, "accepted",
                     masakari_uuid=MASAKARI_UUID, engine_status="new")
RETRY = DeliveryOutcome(DeliveryStatus.RETRY, "HTTP 500: boom")
DOWN = DeliveryOutcome(DeliveryStatus.UNREACHABLE, "connection refused")
CONFIG = DeliveryOutcome(DeliveryStatus.MISCONFIGURED,
                         "Masakari does not know host 'host1'")
NO = DeliveryOutcome(DeliveryStatus.REJECTED, "HTTP 400: no such thing")
DUP = DeliveryOutcome(DeliveryStatus.DUPLICATE, "HTTP 409: is duplicate")
LOGGER = "masakarimonitors_iim.outbox"


class FakeNotifier(Notifier):
    """Answers from a script; the last answer repeats. Exceptions are raised.

    ``held`` is what "Masakari" holds (a NotifierError there: it cannot be
    asked); ``up`` is what the cheap probe says; ``statuses`` maps a
    Masakari uuid to the engine statuses its lookups return, in turn.
    """

    name = "fake"

    def __init__(self, *script, held=(), up=None):
        super().__init__(cfg.ConfigOpts())
        self.script = list(script)
        self.sent = []
        self.called = threading.Event()
        self.held = held
        self.asked = []
        self.up = up
        self.probes = 0
        self.statuses = {}
        self.shown = []

    def held_since(self, since, kind="VM"):
        self.asked.append((since, kind))
        if isinstance(self.held, Exception):
            raise self.held
        return list(self.held)

    def reachable(self):
        self.probes += 1
        return self.up

    def show(self, uuid):
        self.shown.append(uuid)
        answers = self.statuses.get(uuid, ["new"])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return HeldNotification(uuid, "VM", "", {}, answer)

    def send(self, notification):
        self.sent.append(notification)
        self.called.set()
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def store(tmp_path):
    with Database(str(tmp_path / "journal.db")) as db:
        yield OutboxStore(db)


def queue(store, uuid="u-1", t=1000.0, episode=1):
    rec = machine.Record(uuid=uuid, name=uuid, state=State.REPORTED,
                         episode=episode, since=t, updated_at=t)
    assert save(store.db, rec, make_notification(uuid, "host1", t))
    return store.rows()[-1]


def make(store, notifier, clock=None, **kw):
    kw.setdefault("retry_interval", 10)
    kw.setdefault("retry_max", 4)
    kw.setdefault("max_backoff", 100)
    return Sender(store, notifier, clock=clock or Clock(), rng=lambda: 1.0,
                  **kw)


def scan_each_second(s, clock, until):
    while clock.t < until:
        clock.t += 1.0
        s.run_once()


def records(caplog, level):
    return [r for r in caplog.records
            if r.name.startswith(LOGGER) and r.levelno == level]


# -- back-off -------------------------------------------------------------------

@pytest.mark.parametrize("attempt,interval,cap,rnd,want", [
    (1, 10, 300, 1.0, 10),
    (2, 10, 300, 1.0, 20),
    (3, 10, 300, 1.0, 40),
    (5, 10, 300, 1.0, 160),
    (6, 10, 300, 1.0, 300),      # capped
    (50, 10, 300, 1.0, 300),
    (10 ** 6, 10, 300, 1.0, 300),  # no overflow
    (1, 10, 300, 0.0, 5),        # jitter floor is half
    (6, 10, 300, 0.0, 150),
    (3, 10, 300, 0.5, 30),
    (0, 10, 300, 1.0, 10),       # nonsense attempt treated as first
    (1, 0.5, 2, 1.0, 0.5),
    (4, 0.5, 2, 1.0, 2),
])
def test_next_delay(attempt, interval, cap, rnd, want):
    assert next_delay(attempt, interval, cap, lambda: rnd) == pytest.approx(want)


@pytest.mark.parametrize("interval,cap", [(0, 10), (10, 0), (-1, 10)])
def test_next_delay_rejects_non_positive(interval, cap):
    with pytest.raises(ValueError):
        next_delay(1, interval, cap)


def test_jitter_stays_in_range():
    import random
    rng = random.Random(7).random
    for attempt in range(1, 20):
        d = next_delay(attempt, 3, 60, rng)
        base = min(3 * 2 ** (attempt - 1), 60)
        assert base / 2 <= d <= base


# -- outcomes -------------------------------------------------------------------

def test_delivered(store, caplog):
    caplog.set_level(logging.DEBUG)
    entry = queue(store)
    notifier = FakeNotifier(OK)
    make(store, notifier).run_once()
    assert notifier.sent == [entry.notification]
    [row] = store.rows()
    assert (row.status, row.attempts, row.delivered_at, row.last_error) == (
        "delivered", 1, 1000.0, "accepted")
    assert (row.masakari_uuid, row.engine_status, row.engine_checked_at) == (
        MASAKARI_UUID, "new", 1000.0)
    [info] = records(caplog, logging.INFO)
    assert "u-1" in info.getMessage() and "1 attempt" in info.getMessage()


def test_rejected_is_a_dead_letter(store, caplog):
    queue(store)
    make(store, FakeNotifier(NO)).run_once()
    [row] = store.rows()
    assert (row.status, row.attempts, row.last_error) == (
        "dead", 1, "HTTP 400: no such thing")
    [err] = records(caplog, logging.ERROR)
    assert "u-1" in err.getMessage() and "no such thing" in err.getMessage()
    assert "masakari-iim outbox requeue %d" % row.id in err.getMessage()
    assert store.pending() == []


def test_retry_backs_off_and_never_gives_up(store, caplog):
    caplog.set_level(logging.DEBUG)
    queue(store)
    clock = Clock()
    notifier = FakeNotifier(RETRY)
    s = make(store, notifier, clock, retry_max=4)

    s.run_once()
    [row] = store.pending()
    assert (row.attempts, row.next_attempt_at) == (1, 1010.0)
    s.run_once()                    # not due yet: no attempt
    assert len(notifier.sent) == 1

    expected_gaps = [20, 40, 80, 100, 100, 100, 100]   # capped at max_backoff
    for gap in expected_gaps:
        clock.t = row.next_attempt_at
        s.run_once()
        new = store.pending()[0]
        assert new.next_attempt_at - clock.t == pytest.approx(gap)
        row = new
    assert row.attempts == 8 and row.status == "pending"
    assert len(notifier.sent) == 8

    assert len(records(caplog, logging.WARNING)) == 1      # first failure
    [err] = records(caplog, logging.ERROR)                 # at retry_max
    assert "still undelivered after 4 attempts" in err.getMessage()
    assert "u-1" in err.getMessage() and "100s" in err.getMessage()

    notifier.script = [OK]
    clock.t = row.next_attempt_at
    s.run_once()
    [done] = store.rows()
    assert (done.status, done.attempts) == ("delivered", 9)


def test_raising_notifier_is_retry_logged_once(store, caplog):
    queue(store)
    clock = Clock()
    notifier = FakeNotifier(RuntimeError("driver bug"))
    s = make(store, notifier, clock)
    for _ in range(3):
        clock.t += 1000
        s.run_once()
    [row] = store.pending()
    assert row.attempts == 3
    assert "RuntimeError" in row.last_error and "driver bug" in row.last_error
    logged = [r for r in records(caplog, logging.ERROR) if r.exc_info]
    assert len(logged) == 1


def test_detail_is_one_bounded_line(store):
    queue(store)
    long = DeliveryOutcome(DeliveryStatus.RETRY, "line1\nline2 " + "x" * 5000)
    make(store, FakeNotifier(long)).run_once()
    [row] = store.pending()
    assert "\n" not in row.last_error
    assert len(row.last_error) <= sender_mod.MAX_DETAIL


def test_entries_go_one_by_one_oldest_first(store):
    queue(store, "u-1", t=1000.0)
    queue(store, "u-2", t=990.0)
    queue(store, "u-3", t=5000.0)       # not due
    notifier = FakeNotifier(NO, OK)
    make(store, notifier).run_once()
    assert [n.instance_uuid for n in notifier.sent] == ["u-2", "u-1"]
    assert [e.status for e in store.rows()] == [
        "delivered", "dead", "pending"]


def test_run_once_says_how_long_to_wait(store):
    clock = Clock()
    s = make(store, FakeNotifier(RETRY), clock, poll_interval=1.0)
    assert s.run_once() == 1.0                  # nothing pending: poll
    queue(store, t=1000.3)
    clock.t = 1000.0
    assert s.run_once() == pytest.approx(0.3)   # until it is due
    clock.t = 1000.5
    assert s.run_once() == 1.0                  # attempted; next one in 10s


# -- 409 duplicate: ask Masakari ---------------------------------------------------

BLOCKER = "9b0c1d2e-0000-4000-8000-00000000000b"
OURS = "9b0c1d2e-0000-4000-8000-0000000000aa"


def holding(notification, uuid, t=None, status="new"):
    """A notification Masakari holds with ``notification``'s payload,
    generated at ``t`` (default: the very same generated_time)."""
    when = notification.generated_time if t is None else format_generated_time(t)
    return HeldNotification(uuid, notification.type, when,
                            notification.payload(), status)


def test_409_after_a_refused_attempt_is_not_delivered_when_masakari_lacks_it(store, caplog):
    """The lost notification: a second episode within Masakari's window of
    the first, whose first attempt is refused. The 409 is not taken as
    delivery: Masakari is asked, holds only the first episode, so the
    notification is re-sent, re-stamped, once that one's window is over."""
    entry = queue(store, t=1000.0)
    clock = Clock(1000.0)
    notifier = FakeNotifier(DOWN, DUP, OK,
                            held=[holding(entry.notification, BLOCKER, t=900.0,
                                          status="finished")], up=True)
    s = make(store, notifier, clock, duplicate_window=180)
    s.run_once()                                    # refused
    clock.t = store.pending()[0].next_attempt_at    # 1010
    s.run_once()                                    # 409
    [row] = store.pending()
    assert row.status == "pending" and row.restamp_due
    assert notifier.asked == [(format_generated_time(1000.0 - 180 - 60), "VM")]
    assert row.next_attempt_at == 900.0 + 180 + 1   # the blocker's window
    assert row.last_error.startswith("collided with notification " + BLOCKER)
    assert "does not hold this one" in row.last_error and "HTTP 409" in row.last_error
    [warning] = [r.getMessage() for r in records(caplog, logging.WARNING)
                 if "collided" in r.getMessage()]
    assert "u-1" in warning and BLOCKER in warning and "180 s" in warning
    assert "new generated_time" in warning and "again" not in warning

    scan_each_second(s, clock, 1080.0)
    assert len(notifier.sent) == 2      # the window is waited out, not probed
    clock.t = 1081.0
    s.run_once()
    [done] = store.rows()
    assert (done.status, done.masakari_uuid) == ("delivered", MASAKARI_UUID)
    assert notifier.sent[-1].generated_time == format_generated_time(1081.0)
    assert notifier.sent[0].generated_time == notifier.sent[1].generated_time


def test_409_when_masakari_holds_this_one_is_delivered_under_its_uuid(store):
    """An earlier attempt timed out after Masakari stored it: the 409 is
    about this very notification, as the lookup shows."""
    entry = queue(store)
    clock = Clock()
    notifier = FakeNotifier(RETRY, DUP, held=[
        holding(entry.notification, BLOCKER, t=900.0, status="finished"),
        holding(entry.notification, OURS, status="running")])
    s = make(store, notifier, clock)
    s.run_once()
    clock.t = store.pending()[0].next_attempt_at
    s.run_once()
    [row] = store.rows()
    assert (row.status, row.attempts) == ("delivered", 2)
    assert (row.masakari_uuid, row.engine_status) == (OURS, "running")
    assert row.last_error.startswith("Masakari already had it (409 duplicate")
    assert OURS in row.last_error
    assert notifier.sent[0] == notifier.sent[1]     # never re-stamped


def test_409_finds_this_one_even_as_masakari_renders_its_time(store):
    entry = queue(store, t=1000.0)      # .000000 microseconds
    rendered = entry.notification.generated_time.replace(".000000", "") + "+00:00"
    ours = dataclasses.replace(holding(entry.notification, OURS),
                               generated_time=rendered)
    make(store, FakeNotifier(DUP, held=[ours])).run_once()
    assert store.rows()[0].masakari_uuid == OURS


def test_409_whose_blocker_is_out_of_sight_waits_the_whole_window(store):
    queue(store)
    make(store, FakeNotifier(DUP, held=[]), Clock(1000.0),
         duplicate_window=180).run_once()
    [row] = store.pending()
    assert row.next_attempt_at == 1180.0 and row.restamp_due


def test_409_that_cannot_be_checked_is_retried_never_settled(store):
    entry = queue(store)
    clock = Clock()
    notifier = FakeNotifier(DUP, held=NotifierError("connection refused"))
    s = make(store, notifier, clock)
    s.run_once()
    [row] = store.pending()
    assert (row.attempts, row.maybe_landed, row.restamp_due) == (1, 1, False)
    assert "Masakari could not be asked" in row.last_error
    assert "connection refused" in row.last_error
    clock.t = row.next_attempt_at
    s.run_once()                    # same answer: still pending, same time
    assert store.pending()[0].attempts == 2
    assert {n.generated_time for n in notifier.sent} == {
        entry.notification.generated_time}


class Crash(BaseException):
    """The process dying mid-attempt (nothing in the sender catches it)."""


@pytest.mark.parametrize("landed", [True, False])
def test_attempt_cut_short_by_a_crash_is_settled_by_asking(tmp_path, landed):
    """The process died mid-attempt, before or after the POST reached
    Masakari. After the restart Masakari answers 409 either way (the
    earlier episode is in its window); what it holds decides."""
    path = str(tmp_path / "journal.db")
    with Database(path) as first_db:
        first = OutboxStore(first_db)
        entry = queue(first)
        with pytest.raises(Crash):
            make(first, FakeNotifier(Crash())).run_once()
    held = [holding(entry.notification, BLOCKER, t=990.0)]
    if landed:
        held.append(holding(entry.notification, OURS))
    with Database(path) as db:
        store = OutboxStore(db)
        [row] = store.pending()
        assert (row.attempts, row.maybe_landed) == (1, 1)
        notifier = FakeNotifier(DUP, held=held)
        make(store, notifier, Clock(1100.0)).run_once()
        [row] = store.rows()
        if landed:
            assert (row.status, row.masakari_uuid) == ("delivered", OURS)
        else:
            assert (row.status, row.restamp_due) == ("pending", True)
            assert row.next_attempt_at == 990.0 + 180 + 1
        assert notifier.sent[0].generated_time == format_generated_time(1000.0)


def test_a_row_in_flight_is_leased_so_a_second_sender_leaves_it(tmp_path):
    """masakari-monitors restarts our manager in the same process on SIGHUP
    while an attempt may still be in flight: the new sender must not POST
    the same row again until that attempt's time is up."""
    path = str(tmp_path / "journal.db")
    with Database(path) as db:
        store = OutboxStore(db)
        queue(store)
        clock = Clock(1000.0)
        with pytest.raises(Crash):          # the first attempt never returns
            make(store, FakeNotifier(Crash()), clock).run_once()
        lease = 1000.0 + FakeNotifier(DUP).attempt_timeout() + LEASE_MARGIN
        assert store.rows()[0].next_attempt_at == lease
        second = FakeNotifier(DUP)
        clock.t = lease - 1.0
        make(store, second, clock).run_once()
        assert second.sent == []
        clock.t = lease
        make(store, second, clock).run_once()
        assert len(second.sent) == 1


def test_restamped_row_that_collides_again_is_not_taken_as_delivered(store, caplog):
    entry = queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(DUP, DUP, OK, held=[])
    s = make(store, notifier, clock, duplicate_window=180)
    s.run_once()                                # collision
    clock.t = 1180.0
    s.run_once()                                # re-stamped, collides again
    [row] = store.pending()
    assert (row.attempts, row.maybe_landed) == (2, 0)
    assert row.next_attempt_at == 1360.0
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING)]
    assert len(warnings) == 2 and "collided again" in warnings[1]
    assert "longer than the 180s" in warnings[1]
    notifier.held = [holding(entry.notification, BLOCKER, t=1200.0)]
    clock.t = 1360.0
    s.run_once()
    assert store.rows()[0].status == "delivered"
    times = [n.generated_time for n in notifier.sent]
    assert times == [format_generated_time(t) for t in (1000.0, 1180.0, 1360.0)]


def test_collision_waits_at_least_retry_interval(store):
    queue(store)
    make(store, FakeNotifier(DUP, held=[]), Clock(1000.0), retry_interval=10,
         duplicate_window=0).run_once()
    assert store.pending()[0].next_attempt_at == 1010.0


@pytest.mark.parametrize("kw", [dict(retry_interval=0), dict(max_backoff=0),
                                dict(poll_interval=0),
                                dict(duplicate_window=-1)])
def test_rejects_nonsense_settings(store, kw):
    with pytest.raises(ValueError):
        make(store, FakeNotifier(OK), **kw)


# -- Masakari unreachable: a cheap probe, then at once -------------------------------

def test_unreachable_api_is_probed_and_sent_within_retry_interval_of_return(store):
    queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(DOWN, up=False)
    s = make(store, notifier, clock, retry_interval=10, max_backoff=300)
    s.run_once()
    scan_each_second(s, clock, 1160.0)
    # attempts on the back-off schedule only: 1000, 1010, 1030, 1070, 1150
    assert len(notifier.sent) == 5
    assert store.pending()[0].next_attempt_at == 1310.0
    # a probe at most every retry_interval, and only while the next attempt
    # is further away than that
    assert 0 < notifier.probes <= (1160 - 1000) // 10
    probes = notifier.probes
    notifier.up = True
    notifier.script = [OK]
    scan_each_second(s, clock, 1200.0)
    [row] = store.rows()
    assert row.status == "delivered"
    assert row.delivered_at - 1160.0 <= 10.0        # not 1310
    assert len(notifier.sent) == 6
    assert notifier.probes == probes + 1


def test_a_probe_that_says_up_while_sending_still_fails_backs_off(store):
    """The probe answers but the POST still reaches nothing (say a balancer
    that only fails POSTs): the probe must not turn into an attempt every
    retry_interval."""
    queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(DOWN, up=True)
    s = make(store, notifier, clock, retry_interval=10, max_backoff=300)
    s.run_once()
    scan_each_second(s, clock, 2000.0)
    # every 10 s would be about 100 attempts; backing off: a handful
    assert len(notifier.sent) <= 12, len(notifier.sent)
    assert store.pending()[0].status == "pending"


def test_no_probe_while_the_next_attempt_is_due_soon(store):
    queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(DOWN, up=True)
    s = make(store, notifier, clock, retry_interval=10)
    s.run_once()
    scan_each_second(s, clock, 1009.0)
    assert notifier.probes == 0 and len(notifier.sent) == 1


def test_an_api_that_answers_errors_is_not_probed(store):
    queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(RETRY, up=True)
    s = make(store, notifier, clock, retry_interval=10)
    s.run_once()
    scan_each_second(s, clock, 1100.0)
    assert notifier.probes == 0
    assert len(notifier.sent) == 4                  # 1000, 1010, 1030, 1070


def test_after_a_restart_rows_in_back_off_are_probed_for(tmp_path):
    path = str(tmp_path / "journal.db")
    with Database(path) as first_db:
        first = OutboxStore(first_db)
        queue(first)
        make(first, FakeNotifier(DOWN), Clock(1000.0), max_backoff=300).run_once()
        first.mark_retry(1, 5, 1300.0, "connection refused")
    with Database(path) as db:
        store = OutboxStore(db)
        notifier = FakeNotifier(OK, up=True)
        make(store, notifier, Clock(1001.0)).run_once()
        assert store.rows()[0].status == "delivered"
        assert notifier.probes == 1


# -- configuration errors are retried, loudly ------------------------------------------

def test_configuration_error_is_retried_and_said_once_loudly(store, caplog):
    queue(store, "u-1")
    queue(store, "u-2")
    clock = Clock(1000.0)
    notifier = FakeNotifier(CONFIG)
    s = make(store, notifier, clock)
    for _ in range(4):
        s.run_once()
        clock.t += 1000
    assert [r.status for r in store.rows()] == ["pending", "pending"]
    assert all("does not know host" in r.last_error for r in store.rows())
    loud = [r.getMessage() for r in records(caplog, logging.ERROR)
            if "configuration is fixed" in r.getMessage()]
    assert len(loud) == 1 and "does not know host 'host1'" in loud[0]
    notifier.script = [OK]
    s.run_once()
    assert [r.status for r in store.rows()] == ["delivered", "delivered"]
    notifier.script = [CONFIG]
    queue(store, "u-3", t=clock.t)
    s.run_once()                                # said again once it recurs
    assert len([r for r in records(caplog, logging.ERROR)
                if "configuration is fixed" in r.getMessage()]) == 2


def test_a_row_is_sent_under_this_hosts_current_name(store, caplog):
    queue(store)                                # queued for host1
    notifier = FakeNotifier(OK)
    make(store, notifier, hostname="compute-7").run_once()
    assert notifier.sent[0].hostname == "compute-7"
    [row] = store.rows()
    assert (row.status, row.notification.hostname) == ("delivered", "compute-7")
    assert any("'host1' is sent as 'compute-7'" in r.getMessage()
               for r in records(caplog, logging.WARNING))


# -- following a delivered notification to its end -----------------------------------

def test_a_failed_recovery_of_a_guest_still_failing_is_said_loudly(store, caplog):
    caplog.set_level(logging.DEBUG)
    queue(store)                                # journal: REPORTED, episode 1
    clock = Clock(1000.0)
    notifier = FakeNotifier(OK)
    notifier.statuses[MASAKARI_UUID] = ["running", "failed"]
    s = make(store, notifier, clock, retry_interval=10)
    s.run_once()                                # delivered at 1000
    clock.t = 1005.0
    s.run_once()
    assert notifier.shown == []                 # not yet
    clock.t = 1010.0
    s.run_once()
    assert store.rows()[0].engine_status == "running"
    clock.t = 1020.0
    s.run_once()
    [row] = store.rows()
    assert (row.status, row.engine_status, row.engine_checked_at) == (
        "delivered", "failed", 1020.0)
    assert row.last_error.startswith("NOT recovered: Masakari's engine ended "
                                     "notification %s 'failed'" % MASAKARI_UUID)
    [err] = [r.getMessage() for r in records(caplog, logging.ERROR)]
    assert "u-1" in err and "'failed'" in err and "still failing" in err
    clock.t = 5000.0
    s.run_once()
    assert notifier.shown == [MASAKARI_UUID, MASAKARI_UUID]   # final: done


def test_a_finished_recovery_is_recorded_quietly(store, caplog):
    queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(OK)
    notifier.statuses[MASAKARI_UUID] = ["finished"]
    s = make(store, notifier, clock)
    s.run_once()
    clock.t = 1010.0
    s.run_once()
    [row] = store.rows()
    assert (row.engine_status, row.last_error) == ("finished", "accepted")
    assert records(caplog, logging.ERROR) == []


def test_a_lookup_that_fails_is_logged_once_and_backs_off(store, caplog):
    queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(OK)
    notifier.statuses[MASAKARI_UUID] = [NotifierError("HTTP 503")]
    s = make(store, notifier, clock, retry_interval=10, max_backoff=100)
    s.run_once()
    scan_each_second(s, clock, 2000.0)
    # every 10 s while young, slower as it ages (age / 10), at most 100 s
    assert 15 < len(notifier.shown) < 40
    [row] = store.rows()
    assert row.engine_status == "new" and row.engine_checked_at > 1900.0
    logged = [r for r in records(caplog, logging.WARNING)
              if "cannot look up" in r.getMessage()]
    assert len(logged) == 1


def test_following_gives_way_to_delivery_and_to_an_unreachable_masakari(store):
    """Following runs on the sender thread: one failed lookup ends the scan
    (each would cost the request timeout), and it stops once a new
    notification is due, which is delivered first."""
    clock = Clock(1000.0)
    notifier = FakeNotifier(OK)
    for n in range(3):
        queue(store, uuid="u-%d" % n, episode=1)
    s = make(store, notifier, clock)
    s.run_once()                                  # three delivered
    notifier.statuses[MASAKARI_UUID] = [NotifierError("timed out")]
    clock.t = 1010.0
    s.run_once()
    assert notifier.shown == [MASAKARI_UUID]      # not three timeouts
    notifier.statuses[MASAKARI_UUID] = ["running"]
    clock.t = 1030.0
    real_show = notifier.show
    looks = []

    def show(uuid):
        looks.append(uuid)
        if len(looks) == 1:       # a new failure is reported meanwhile
            queue(store, uuid="u-new", t=1030.0)
        return real_show(uuid)
    notifier.show = show
    s.run_once()
    assert len(looks) == 1                        # stopped: one is due
    s.run_once()
    assert notifier.sent[-1].instance_uuid == "u-new"


def test_a_notification_without_a_masakari_uuid_is_not_followed(store):
    queue(store)
    notifier = FakeNotifier(DeliveryOutcome(DeliveryStatus.DELIVERED, "logged only"))
    clock = Clock(1000.0)
    s = make(store, notifier, clock)
    s.run_once()
    clock.t = 2000.0
    s.run_once()
    assert notifier.shown == []


# -- the thread -------------------------------------------------------------------

def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_pending_rows_from_a_previous_run_go_on_start(tmp_path):
    path = str(tmp_path / "journal.db")
    with Database(path) as first:
        queue(OutboxStore(first), "u-old")
    with Database(path) as db:
        store = OutboxStore(db)
        notifier = FakeNotifier(OK)
        s = Sender(store, notifier, retry_interval=1, retry_max=3,
                   poll_interval=60)
        s.start()
        try:
            assert wait_for(lambda: store.pending() == [])
        finally:
            assert s.stop(5)
        assert [n.instance_uuid for n in notifier.sent] == ["u-old"]


def test_wake_delivers_at_once(store):
    notifier = FakeNotifier(OK)
    s = Sender(store, notifier, retry_interval=1, retry_max=3,
               poll_interval=60)     # polling alone would take a minute
    s.start()
    try:
        time.sleep(0.05)
        queue(store, t=time.time())
        s.wake()
        assert notifier.called.wait(5)
        assert wait_for(lambda: store.pending() == [])
    finally:
        assert s.stop(5)


def test_stop_without_start_and_twice(store):
    s = make(store, FakeNotifier(OK))
    assert s.stop(1)
    s.start()
    s.start()   # no second thread
    assert s.stop(5)
    assert s.stop(5)


class FlakyStore(OutboxStore):
    """An outbox whose due() fails a few times, then works."""

    def __init__(self, real, failures):
        super().__init__(real.db)
        self.failures = failures

    def due(self, now, limit=50):
        if self.failures:
            self.failures -= 1
            raise OSError("disk I/O error")
        return super().due(now, limit)


def test_loop_survives_failures_and_logs_once(store, caplog):
    caplog.set_level(logging.INFO)
    queue(store, t=time.time())
    flaky = FlakyStore(store, failures=3)
    notifier = FakeNotifier(OK)
    s = Sender(flaky, notifier, retry_interval=1, retry_max=3,
               poll_interval=0.02)
    s.start()
    try:
        assert wait_for(lambda: store.pending() == [])
    finally:
        assert s.stop(5)
    failures = [r for r in records(caplog, logging.ERROR)
                if "iteration failed" in r.getMessage()]
    assert len(failures) == 1
    assert any("working again" in r.getMessage()
               for r in records(caplog, logging.INFO))
