"""When the sender asks whether an unreachable Masakari is back, from tables."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.notifier.base import DeliveryStatus as S
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox.entry import OutboxEntry
from masakarimonitors_iim.outbox.entry import PENDING
from masakarimonitors_iim.outbox.reach import Reach

FAR = 10 ** 9       # a next attempt nowhere near


def row(id, attempts=1, next_at=FAR, maybe_landed=None):
    return OutboxEntry(
        id=id, notification=make_notification("u-%d" % id, "host1", 900.0),
        episode=1, reason="", status=PENDING, attempts=attempts,
        next_attempt_at=next_at, last_error="", created_at=900.0,
        delivered_at=None,
        maybe_landed=attempts if maybe_landed is None else maybe_landed)


def pending(*rows):
    return {r.id: r for r in rows}


@pytest.mark.parametrize("rows,want", [
    ([], []),
    # never attempted: nothing says the API is down
    ([row(1, attempts=0)], []),
    # in back-off, the next attempt far away: asked about
    ([row(1, next_at=1300.0)], [1]),
    # due within retry_interval anyway: no question for it
    ([row(1, next_at=1010.0)], []),
    ([row(1, next_at=1010.5)], [1]),
    # collided (re-stamp due): waits out Masakari's window, not the API
    ([row(1, attempts=2, maybe_landed=0)], []),
    # several, sorted by id
    ([row(3), row(1, attempts=0), row(2), row(4, next_at=1005.0)], [2, 3]),
])
def test_first_look_after_a_start_seeds_from_the_outbox(rows, want):
    r = Reach(retry_interval=10, max_backoff=300)
    assert r.waiting(pending(*rows), now=1000.0) == want


def test_a_question_is_asked_at_most_every_retry_interval():
    r = Reach(retry_interval=10, max_backoff=300)
    rows = pending(row(1))
    assert r.waiting(rows, 1000.0) == [1]
    assert r.waiting(rows, 1009.9) == []
    assert r.waiting(rows, 1010.0) == [1]


def test_rows_no_longer_pending_are_forgotten_and_only_unreachable_ones_count():
    r = Reach(retry_interval=10, max_backoff=300)
    assert r.waiting(pending(row(1), row(2)), 1000.0) == [1, 2]
    # row 2 settled meanwhile; row 5 is new and failed otherwise (never
    # told unreachable): neither is asked about
    assert r.waiting(pending(row(1), row(5)), 1010.0) == [1]
    assert r.waiting(pending(row(2)), 1020.0) == []


def test_a_row_that_collided_since_waits_its_window_not_the_api():
    """Another sender (a restarted manager in the same process) may have
    met the 409 for a row this one last saw unreachable."""
    r = Reach(retry_interval=10, max_backoff=300)
    assert r.waiting(pending(row(1)), 1000.0) == [1]
    assert r.waiting(pending(row(1, attempts=2, maybe_landed=0)), 1010.0) == []


@pytest.mark.parametrize("false_alarms,gap", [
    (0, 10),        # reached nothing, not sent on the probe's word: retry_interval
    (1, 20),        # the probe said up and the attempt still reached nothing
    (2, 40),
    (4, 160),
    (5, 300),       # capped at max_backoff
    (9, 300),
])
def test_a_probe_that_lies_backs_off(false_alarms, gap):
    r = Reach(retry_interval=10, max_backoff=300)
    rows = pending(row(1))
    assert r.waiting(rows, 0.0) == [1]
    now = 0.0
    for _ in range(false_alarms):
        r.back([1])
        assert r.answered(1, S.UNREACHABLE) is True
        r.unreachable(1, True, now)
        now += 1000.0
        assert r.waiting(rows, now) == [1]
    r.unreachable(1, r.answered(1, S.UNREACHABLE), now)
    assert r.waiting(rows, now + gap - 0.01) == []
    assert r.waiting(rows, now + gap) == [1]


@pytest.mark.parametrize("status", [S.DELIVERED, S.RETRY, S.DUPLICATE,
                                    S.MISCONFIGURED, S.REJECTED])
def test_any_answer_from_masakari_ends_the_wait_and_the_false_alarms(status):
    r = Reach(retry_interval=10, max_backoff=300)
    rows = pending(row(1), row(2))
    assert r.waiting(rows, 0.0) == [1, 2]
    r.back([1, 2])
    r.unreachable(1, r.answered(1, S.UNREACHABLE), 0.0)    # a false alarm: 20 s
    assert r.answered(2, status) is True                    # Masakari answered
    assert r.waiting(rows, 20.0) == [1]                     # 2 is no longer waiting
    r.unreachable(1, False, 20.0)
    assert r.waiting(rows, 29.99) == []
    assert r.waiting(rows, 30.0) == [1]                     # false alarms reset


def test_expedited_is_said_once_per_probe():
    r = Reach(retry_interval=10, max_backoff=300)
    assert r.answered(1, S.UNREACHABLE) is False
    r.back([1])
    assert r.answered(1, S.UNREACHABLE) is True
    assert r.answered(1, S.UNREACHABLE) is False
