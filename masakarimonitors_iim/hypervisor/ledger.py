"""Which libvirt calls are in flight, per connection, and since when
libvirtd last answered one: what :mod:`.stall` measures to tell a hung
libvirtd, and what :mod:`.replaced` waits on before closing a replaced
connection.

Not thread-safe on its own: :class:`~.connection.Connection` calls it
under its lock. Times are monotonic seconds, passed in.
"""
from __future__ import annotations

import itertools
from typing import Hashable


class CallLedger:
    def __init__(self) -> None:
        self._tokens = itertools.count(1)
        self._calls: dict[int, tuple[Hashable, float]] = {}
        self._last_done: dict[Hashable, float] = {}

    def begin(self, conn: Hashable, now: float) -> int:
        token = next(self._tokens)
        self._calls[token] = (conn, now)
        return token

    def end(self, token: int, now: float) -> None:
        conn, _ = self._calls.pop(token)
        self._last_done[conn] = now

    def in_flight(self, conn: Hashable) -> int:
        return sum(1 for c, _ in self._calls.values() if c is conn)

    def waiting_for(self, conn: Hashable, now: float, opened_at: float) -> float:
        """Seconds libvirtd has left a call on ``conn`` waiting without
        answering any (0 when none waits): from the later of the oldest
        waiting call's start and the last answer (or the open)."""
        starts = [start for c, start in self._calls.values() if c is conn]
        if not starts:
            return 0.0
        progress = max(self._last_done.get(conn, opened_at), opened_at, min(starts))
        return max(0.0, now - progress)

    def forget(self, conn: Hashable) -> None:
        """The connection is closed: its last answer no longer matters."""
        self._last_done.pop(conn, None)
