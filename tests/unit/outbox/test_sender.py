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
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.outbox import sender as sender_mod
from masakarimonitors_iim.outbox.sender import Sender
from masakarimonitors_iim.outbox.store import OutboxStore
from tests.unit.outbox.helpers import save

OK = DeliveryOutcome(DeliveryStatus.DELIVERED, "accepted")
RETRY = DeliveryOutcome(DeliveryStatus.RETRY, "HTTP 500: boom")
NO = DeliveryOutcome(DeliveryStatus.REJECTED, "HTTP 400: no such host")
DUP = DeliveryOutcome(DeliveryStatus.DUPLICATE, "HTTP 409: is duplicate")
LOGGER = "masakarimonitors_iim.outbox.sender"


class FakeNotifier(Notifier):
    """Answers from a script; the last answer repeats. Exceptions are raised."""

    name = "fake"

    def __init__(self, *script):
        super().__init__(cfg.ConfigOpts())
        self.script = list(script)
        self.sent = []
        self.called = threading.Event()

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


def records(caplog, level):
    return [r for r in caplog.records
            if r.name == LOGGER and r.levelno == level]


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
    [info] = records(caplog, logging.INFO)
    assert "u-1" in info.getMessage() and "1 attempt" in info.getMessage()


def test_rejected_is_a_dead_letter(store, caplog):
    queue(store)
    make(store, FakeNotifier(NO)).run_once()
    [row] = store.rows()
    assert (row.status, row.attempts, row.last_error) == (
        "dead", 1, "HTTP 400: no such host")
    [err] = records(caplog, logging.ERROR)
    assert "u-1" in err.getMessage() and "no such host" in err.getMessage()
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


# -- 409 duplicate ----------------------------------------------------------------

def test_first_attempt_409_is_a_collision_resent_restamped(store, caplog):
    """A new episode within Masakari's window of an earlier one: 409 on its
    very first attempt. Not delivered: re-sent, re-stamped, after the window."""
    entry = queue(store, t=1000.0)
    clock = Clock(1000.0)
    notifier = FakeNotifier(DUP, OK)
    s = make(store, notifier, clock, duplicate_window=180)
    s.run_once()
    [row] = store.pending()
    assert (row.attempts, row.maybe_landed) == (1, 0)
    assert row.next_attempt_at == 1180.0 and row.restamp_due
    assert "is duplicate" in row.last_error and "collided" in row.last_error
    [warning] = records(caplog, logging.WARNING)
    text = warning.getMessage()
    assert "u-1" in text and "180 s" in text and "new generated_time" in text
    assert "again" not in text

    clock.t = 1100.0
    s.run_once()                            # inside the window: no attempt
    assert len(notifier.sent) == 1
    clock.t = 1180.5
    s.run_once()
    stamped = format_generated_time(1180.5)
    assert notifier.sent[1] == dataclasses.replace(entry.notification,
                                                   generated_time=stamped)
    [done] = store.rows()
    assert (done.status, done.attempts, done.last_error) == (
        "delivered", 2, "accepted")
    assert done.notification.generated_time == stamped
    assert len(records(caplog, logging.WARNING)) == 1


def test_409_after_an_attempt_that_may_have_landed_is_delivered(store):
    queue(store)
    clock = Clock()
    notifier = FakeNotifier(RETRY, DUP)
    s = make(store, notifier, clock)
    s.run_once()
    clock.t = store.pending()[0].next_attempt_at
    s.run_once()
    [row] = store.rows()
    assert (row.status, row.attempts) == ("delivered", 2)
    assert row.last_error.startswith("Masakari already had it (409 duplicate)")
    # the same generated_time both times: never re-stamped
    assert notifier.sent[0] == notifier.sent[1]


class Crash(BaseException):
    """The process dying mid-attempt (nothing in the sender catches it)."""


def test_attempt_cut_short_by_a_crash_counts_after_restart(tmp_path):
    """The POST landed, then the process died before settle: after
    the restart Masakari answers 409, and that is the proof of delivery."""
    path = str(tmp_path / "journal.db")
    with Database(path) as first_db:
        first = OutboxStore(first_db)
        queue(first)
        with pytest.raises(Crash):
            make(first, FakeNotifier(Crash())).run_once()
    with Database(path) as db:
        store = OutboxStore(db)
        [row] = store.pending()
        assert (row.attempts, row.maybe_landed) == (1, 1)
        notifier = FakeNotifier(DUP)
        make(store, notifier, Clock(5000.0)).run_once()
        [row] = store.rows()
        assert (row.status, row.attempts) == ("delivered", 2)
        assert "already had it" in row.last_error
        assert notifier.sent[0].generated_time == format_generated_time(1000.0)


def test_restamped_row_that_collides_again_is_not_taken_as_delivered(store, caplog):
    """Attempts that collided never landed, so a later 409 is a collision
    again; only after an attempt with the new time that may have landed
    (a timeout) does a 409 prove delivery."""
    queue(store)
    clock = Clock(1000.0)
    notifier = FakeNotifier(DUP, DUP, RETRY, DUP)
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
    clock.t = 1360.0
    s.run_once()                                # re-stamped, times out
    [row] = store.pending()
    assert (row.attempts, row.maybe_landed) == (3, 1)
    clock.t = row.next_attempt_at
    s.run_once()                                # 409: the timeout had landed
    [row] = store.rows()
    assert (row.status, row.attempts) == ("delivered", 4)
    times = [n.generated_time for n in notifier.sent]
    assert times == [format_generated_time(t) for t in
                     (1000.0, 1180.0, 1360.0, 1360.0)]


def test_collision_waits_at_least_retry_interval(store):
    queue(store)
    make(store, FakeNotifier(DUP), Clock(1000.0), retry_interval=10,
         duplicate_window=0).run_once()
    assert store.pending()[0].next_attempt_at == 1010.0


@pytest.mark.parametrize("kw", [dict(retry_interval=0), dict(max_backoff=0),
                                dict(poll_interval=0),
                                dict(duplicate_window=-1)])
def test_rejects_nonsense_settings(store, kw):
    with pytest.raises(ValueError):
        make(store, FakeNotifier(OK), **kw)


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
