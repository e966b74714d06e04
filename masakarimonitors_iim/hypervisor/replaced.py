"""Replaced libvirt connections, closed only once no call waits on them.

The connector replaces a connection it finds lost (closed by libvirtd,
a dead socket, a stall, a call's transport error) at once, but calls may
still wait on the old one: closing it under them would free client
memory they use (the libvirt 9.0 client crashed when their replies
finally came), and on a stalled libvirtd they return normally once it
continues. So the old connection is kept here and closed by the
connector once its last call returned; events it delivers meanwhile are
stale (the relisting after the reconnect covers them).
"""
from __future__ import annotations

import contextlib
import threading

import libvirt
from oslo_log import log as logging

from masakarimonitors_iim.hypervisor.ledger import CallLedger

LOG = logging.getLogger(__name__)


class ReplacedConnections:
    """The connections detached from use, until they are closed.

    ``lock`` and ``calls`` are the connection's own: a call begins on a
    connection only under that lock, and only on the current one, so a
    detached connection found here with no call in flight stays so.
    """

    def __init__(self, uri: str, lock: threading.Condition, calls: CallLedger) -> None:
        self._uri = uri
        self._lock = lock
        self._calls = calls
        self._waited_on: list[tuple[libvirt.virConnect, list[int]]] = []

    def close(self, conn: libvirt.virConnect | None, ids: list[int]) -> None:
        """Close a detached connection now, or once no call waits on it;
        ``ids`` are its domain event callbacks."""
        if conn is None:
            return
        with self._lock:
            waiting = self._calls.in_flight(conn)
            if waiting:
                self._waited_on.append((conn, ids))
        if waiting:
            LOG.info("%d libvirt call(s) still wait on the replaced connection to %s; it "
                     "is closed once they return", waiting, self._uri)
        else:
            self._close_now(conn, ids)

    def close_returned(self) -> None:
        """Close those whose calls have all returned (the connector's
        periodic check)."""
        with self._lock:
            done = [(c, i) for c, i in self._waited_on if not self._calls.in_flight(c)]
            self._waited_on = [(c, i) for c, i in self._waited_on if self._calls.in_flight(c)]
        for conn, ids in done:
            self._close_now(conn, ids)

    def holds(self, conn: libvirt.virConnect) -> bool:
        """True for a replaced connection not closed yet: its events are stale."""
        with self._lock:
            return any(conn is c for c, _ in self._waited_on)

    def _close_now(self, conn: libvirt.virConnect, ids: list[int]) -> None:
        close_quietly(conn, ids)
        with self._lock:
            self._calls.forget(conn)


def close_quietly(conn: libvirt.virConnect, ids: list[int]) -> None:
    """Best effort: on a dead connection each of these fails fast."""
    for callback_id in ids:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback_id)
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
