"""When to ask whether an unreachable Masakari is back (state only, no I/O).

Back-off protects Masakari from load, not from an answer: while the last
attempt of a row reached nothing (connection refused, a gateway's 503),
the sender asks cheaply (``Notifier.reachable``) every ``retry_interval``
whether the API is back, and sends those rows at once when it is. This
module keeps which rows wait for that and when the next question is due;
the sender asks, and tells it what the attempts then met. Kept apart
from the sender so the rule can change (and be tested) without its
thread, store or notifier.

A probe can lie (a balancer that answers GETs but fails POSTs): each time
the rows it sent still reach nothing, the next probe waits longer, as
attempts back off, so a lying probe cannot make the sender hammer.
"""
from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence

from masakarimonitors_iim.common.backoff import next_delay
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.outbox.entry import OutboxEntry


class Reach:
    """Rows waiting for the API to come back, and when to ask next."""

    def __init__(self, retry_interval: float, max_backoff: float) -> None:
        self.retry_interval = float(retry_interval)
        self.max_backoff = float(max_backoff)
        # Rows whose last attempt reached nothing; seeded from the outbox
        # at the first look.
        self._unreachable: set[int] = set()
        self._seeded = False
        self._next_probe = 0.0
        # Rows last sent because the probe said the API is back, and how
        # often in a row the attempt then still reached nothing.
        self._expedited: set[int] = set()
        self._false_alarms = 0

    def waiting(self, pending: Mapping[int, OutboxEntry], now: float) -> list[int]:
        """The rows to ask about now (sorted), or [] when no question is
        due; a non-empty answer takes the question, so the next is not due
        for ``retry_interval``. Rows due within ``retry_interval`` anyway,
        and collided rows (they wait out Masakari's window, not the API),
        are not asked about."""
        if not self._seeded:
            # After a restart the reason of the last failure is not known:
            # one probe and one attempt tell (collided rows wait their window).
            self._seeded = True
            self._unreachable = {i for i, e in pending.items()
                                 if e.attempts > 0 and not e.restamp_due}
        self._unreachable &= set(pending)
        soon = now + self.retry_interval
        waiting = sorted(i for i in self._unreachable
                         if pending[i].next_attempt_at > soon
                         and not pending[i].restamp_due)
        if not waiting or now < self._next_probe:
            return []
        self._next_probe = now + self.retry_interval
        return waiting

    def back(self, ids: Sequence[int]) -> None:
        """The API answered the probe; ``ids`` are being sent now."""
        self._unreachable.difference_update(ids)
        self._expedited = set(ids)

    def answered(self, id: int, status: DeliveryStatus) -> bool:
        """An attempt of row ``id`` ended with ``status``; whether it was
        sent because a probe said the API is back."""
        expedited = id in self._expedited
        self._expedited.discard(id)
        if status is not DeliveryStatus.UNREACHABLE:
            # Masakari answered: whatever follows, nothing to probe for.
            self._unreachable.discard(id)
            self._false_alarms = 0
        return expedited

    def unreachable(self, id: int, expedited: bool, now: float) -> None:
        """Row ``id``'s attempt reached nothing (its retry is recorded)."""
        self._unreachable.add(id)
        if expedited:
            self._false_alarms += 1
        self._next_probe = now + next_delay(
            self._false_alarms + 1, self.retry_interval, self.max_backoff,
            lambda: 1.0)
