"""Which libvirt calls are in flight, per connection, and since when
libvirtd last answered one: how the monitor tells a hung libvirtd.

Why not libvirt's keepalive: when keepalive declares a connection dead
while two or more calls wait on it, the libvirt 9.0 client wakes one of
them; the others stay in the closed client's I/O loop until data arrives
on a file descriptor number that by then belongs to another socket, and
the process dies with SIGSEGV (reproduced with two threads making any
two calls while libvirtd is SIGSTOPped, keepalive 1 s x 3, then
SIGCONT). With keepalive off, calls on a hung libvirtd simply wait and
complete once it continues. So the monitor turns keepalive off, calls a
connection stalled when a call has waited longer than the stall limit
and nothing completed on it for as long, and never closes a connection
while calls are in flight on it.

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
