"""The call ledger: what makes a connection count as stalled."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.hypervisor.ledger import CallLedger

A, B = object(), object()


@pytest.mark.parametrize("calls, answered_at, now, expected", [
    # (connection, start) of the calls waiting; last answer on A; now
    ([], None, 100.0, 0.0),                          # nothing waits
    ([(A, 90.0)], None, 100.0, 10.0),                # one call, since it began
    ([(A, 90.0)], 95.0, 100.0, 5.0),                 # an answer since then counts
    ([(A, 90.0), (A, 98.0)], 95.0, 100.0, 5.0),      # oldest call vs last answer
    ([(B, 50.0)], None, 100.0, 0.0),                 # another connection's call
    ([(A, 20.0)], None, 100.0, 70.0),                # opened at 30: not before
])
def test_waiting_for(calls, answered_at, now, expected):
    ledger = CallLedger()
    if answered_at is not None:
        ledger.end(ledger.begin(A, answered_at - 1), answered_at)
    for conn, start in calls:
        ledger.begin(conn, start)
    assert ledger.waiting_for(A, now, opened_at=30.0) == expected


def test_in_flight_counts_per_connection_and_ends():
    ledger = CallLedger()
    a1, a2, b1 = ledger.begin(A, 1.0), ledger.begin(A, 2.0), ledger.begin(B, 3.0)
    assert (ledger.in_flight(A), ledger.in_flight(B)) == (2, 1)
    ledger.end(a1, 4.0)
    ledger.end(b1, 4.0)
    assert (ledger.in_flight(A), ledger.in_flight(B)) == (1, 0)
    ledger.end(a2, 5.0)
    assert ledger.waiting_for(A, 10.0, opened_at=0.0) == 0.0


def test_forget_drops_the_last_answer():
    ledger = CallLedger()
    ledger.end(ledger.begin(A, 1.0), 50.0)
    ledger.forget(A)
    ledger.begin(A, 60.0)
    assert ledger.waiting_for(A, 100.0, opened_at=0.0) == 40.0
