"""Saying when probe rounds wait for an agent slot.

More hung guests than the agent slots can confirm per interval
(slots x interval / timeout, see doc/source/operations.rst, Sizing) make
detection degrade linearly: each round waits its turn. That must never
be silent, and never a log storm either: one WARNING when rounds have
waited longer than ``grace``, one INFO when none waits any more; the
numbers are always in the status snapshot and the metrics.
"""
from __future__ import annotations

from typing import Any, Callable

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.monitor.schedule import Backlog

#: A round may wait this long for a slot before it counts as a backlog in
#: the log (the issue's bound: detection within the policy's bound + 1 s).
GRACE = 1.0
#: A backlog is said to clear once none has waited for this long, so a
#: host at the edge of its slots logs a pair of lines at most this often.
CLEAR_AFTER = 30.0


class BacklogWatch:
    def __init__(self, logger: Any, *, slots: int, suspect_slots: int,
                 set_metrics: Callable[[int, float], None],
                 grace: float = GRACE) -> None:
        self._trouble = LogOnce(logger)
        self._slots = slots
        self._suspect_slots = suspect_slots
        self._set_metrics = set_metrics
        self._grace = grace
        self.last = Backlog()
        self._worst = 0
        self._clear_since: float | None = None

    def update(self, backlog: Backlog, now: float) -> bool:
        """Called by the scheduler thread after every batch it started;
        True when a backlog began or cleared (worth a status write)."""
        if backlog != self.last:
            self._set_metrics(backlog.overdue, backlog.oldest_seconds)
        self.last = backlog
        self._worst = max(self._worst, backlog.overdue)
        if backlog.oldest_seconds < self._grace:
            # Rounds that wait a moment for a slot (a few due together)
            # are no backlog; one is said to clear after CLEAR_AFTER of that.
            if not self._trouble.active():
                self._worst = 0
                return False
            if self._clear_since is None:
                self._clear_since = now
            if now - self._clear_since < CLEAR_AFTER:
                return False
            self._trouble.resolved(
                "probe backlog cleared (at most %d rounds waited for an agent slot)",
                self._worst)
            self._worst, self._clear_since = 0, None
            return True
        self._clear_since = None
        if self._trouble.active():
            return False
        self._trouble.problem(
            "probe backlog: %d rounds due and waiting for an agent slot (%s), the oldest "
            "for %.1f s; failures are detected that much later. %d agent slots "
            "([introspectiveinstancemonitor] probe_workers), %d of them for domains not "
            "healthy, confirm at most %d x interval / timeout hung guests per interval; "
            "see Sizing in the operations guide", backlog.overdue,
            ", ".join("%s %d" % pair for pair in backlog.by_lane), backlog.oldest_seconds,
            self._slots, self._suspect_slots, self._suspect_slots)
        return True

    def snapshot(self) -> dict[str, Any]:
        """For the status file: ``{"overdue", "oldest_seconds", "lanes",
        "slots", "suspect_slots"}``."""
        b = self.last
        return {"overdue": b.overdue, "oldest_seconds": round(b.oldest_seconds, 3),
                "lanes": dict(b.by_lane), "slots": self._slots,
                "suspect_slots": self._suspect_slots}
