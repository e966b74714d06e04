"""The monitor's one connection to libvirtd, kept alive in the background.

Worker threads share the connection (libvirt connections are
thread-safe). A background thread opens it, notices when it dies
(close callback, a stall, or a call failing at the transport level) and
reopens it with exponential back-off; callers never wait for that: while
there is no connection :meth:`Connection.hold` raises
:class:`HypervisorUnavailable` at once.

libvirt's keepalive is off; :mod:`.stall` says why and how a hung
libvirtd is told instead. Once a connection is lost new calls fail at
once, and the calls still waiting on it return when libvirtd continues,
after which :mod:`.replaced` closes it. :mod:`.events` passes the
domain events on.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

import libvirt
from oslo_log import log as logging

from masakarimonitors_iim.common.backoff import next_delay
from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor import eventloop, translate
from masakarimonitors_iim.hypervisor.events import EventRelay
from masakarimonitors_iim.hypervisor.ledger import CallLedger
from masakarimonitors_iim.hypervisor.replaced import ReplacedConnections, close_quietly
from masakarimonitors_iim.hypervisor.stall import StallWatch
from masakarimonitors_iim.hypervisor.translate import Failure
from masakarimonitors_iim.hypervisor.types import (
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
    LifecycleEvent,
)

LOG = logging.getLogger(__name__)

#: First reconnect delay; it doubles per failed attempt up to the maximum.
RECONNECT_BASE_INTERVAL = 0.5

#: How often the connector thread looks for a stall and for replaced
#: connections whose calls have all returned (seconds).
CHECK_INTERVAL = 1.0


class Connection:
    """A self-healing libvirt connection and the events it carries.

    ``on_event`` gets every lifecycle event and ``on_changed`` the UUID of
    each domain whose XML changed, on the libvirt event thread (see
    :class:`~.events.EventRelay`).

    ``on_connected`` runs on the connector thread after every successful
    open and before the connection is announced (``connected``,
    CONNECTION_RESTORED): whatever libvirtd forgot with the old connection
    can be set again there, and it may block.

    One-shot: ``start`` after ``stop`` does nothing; make a new object.
    """

    def __init__(self, uri: str, on_event: Callable[[LifecycleEvent], None] | None = None, *,
                 on_connected: Callable[[], None] | None = None,
                 on_changed: Callable[[str], None] | None = None,
                 keepalive_interval: int = 5, keepalive_count: int = 3,
                 reconnect_max_interval: float = 30.0) -> None:
        self.uri = uri
        self._on_connected = on_connected
        self._reconnect_max_interval = reconnect_max_interval

        # Guards the fields below, the ledger and the replaced connections.
        self._lock = threading.Condition()
        self._conn: libvirt.virConnect | None = None
        self._calls = CallLedger()
        self._opened_at = 0.0
        self._replaced = ReplacedConnections(uri, self._lock, self._calls)
        self._callback_ids: list[int] = []
        self._lost_reason: str | None = None
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False

        self._stall = StallWatch(keepalive_interval, keepalive_count, self.hold)
        self._events = EventRelay(on_event, on_changed, stale=self._replaced.holds,
                                  stopping=self._stopping)
        self._connect_failing = LogOnce(LOG)   # connector thread only

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> bool:
        """Start the event loop and the connector thread; returns at once,
        True if this call started them (False: already started or stopped).
        """
        with self._lock:
            if self._started:
                return False
            self._started = True
        eventloop.acquire()
        self._thread = threading.Thread(target=self._run, name="libvirt-connect", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Close the connection and let the threads go; idempotent.

        Waits at most ``timeout`` seconds: closing talks to libvirtd, and
        a hung libvirtd must not hang shutdown (the threads are daemons).
        """
        with self._lock:
            if not self._started or self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                LOG.warning("libvirt connection to %s did not close within %.1f s; "
                            "leaving it to exit on its own", self.uri, timeout)
        eventloop.release(max(0.0, deadline - time.monotonic()))

    @property
    def connected(self) -> bool:
        """True while a connection is open and not known to be dead."""
        return self._connected.is_set()

    @property
    def is_open(self) -> bool:
        """True while there is a connection to try a call on, even one
        already known dead (calls on it fail fast)."""
        return self._conn is not None

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; False if none."""
        return self._connected.wait(timeout)

    def reconnect_delay(self, attempt: int) -> float:
        """Seconds to wait after failed connect attempt ``attempt`` (1-based)."""
        return next_delay(attempt, RECONNECT_BASE_INTERVAL, self._reconnect_max_interval)

    # -- calls ---------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self) -> Iterator[libvirt.virConnect]:
        """The current connection, kept open (not closed under us by a
        reconnect) until the block ends."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise HypervisorUnavailable("not connected to libvirt at %s" % self.uri)
            if self._lost_reason is not None:
                # Marked lost, not yet replaced: libvirt may be closing this
                # client right now, and a call that enters it then can wait
                # forever (and crashed libvirt 9.0's client when the reply
                # finally came). Fail at once, as after the replacement.
                raise HypervisorUnavailable("connection to libvirt at %s is being replaced: %s"
                                            % (self.uri, self._lost_reason))
            token = self._calls.begin(conn, time.monotonic())
        try:
            yield conn
        finally:
            with self._lock:
                self._calls.end(token, time.monotonic())

    def failure(self, conn: libvirt.virConnect, exc: libvirt.libvirtError) -> Failure:
        """Name a call's libvirt error; if it says libvirtd is gone, have
        the connector replace ``conn`` without waiting for its next check."""
        failure = translate.failure_of(exc)
        if failure.kind is ErrorKind.CONNECTION_LOST:
            self._mark_lost(conn, failure.message)
        return failure

    # -- connector thread --------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        lost_at: float | None = None
        ever_connected = False
        try:
            while not self._stopping.is_set():
                if self._conn is None:
                    try:
                        self._connect()
                    except Exception as exc:  # libvirtError, or a bug in a callback
                        attempt += 1
                        self._connect_failing.problem(
                            "cannot connect to libvirt at %s: %s; retrying with back-off "
                            "up to %.0f s", self.uri, one_line(str(exc)),
                            self._reconnect_max_interval)
                        self._wake.wait(self.reconnect_delay(attempt))
                        self._wake.clear()
                        continue
                    attempt = 0
                    self._connect_failing.resolved()
                    self._announce(restored=ever_connected, lost_at=lost_at)
                    ever_connected = True
                # isAlive() is local (no RPC): it catches a dead socket even
                # if the close callback never comes.
                self._wake.wait(CHECK_INTERVAL)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                self._replaced.close_returned()
                reason = self._lost_reason
                if reason is None and not self._is_alive():
                    reason = "connection is no longer alive"
                if reason is None:
                    reason = self._stalled()
                if reason is not None:
                    LOG.warning("lost connection to libvirt at %s: %s", self.uri, reason)
                    lost_at = time.monotonic()
                    conn, ids = self._detach()
                    self._events.emit(LifecycleEvent(EventKind.CONNECTION_LOST, detail=reason))
                    self._replaced.close(conn, ids)
        except Exception:
            LOG.exception("libvirt connector thread failed; no further reconnects")
        finally:
            self._replaced.close(*self._detach())

    def _announce(self, restored: bool, lost_at: float | None) -> None:
        if self._on_connected is not None and not self._stopping.is_set():
            try:
                self._on_connected()
            except Exception:
                LOG.exception("setting up the new libvirt connection to %s failed", self.uri)
        if restored:
            LOG.info("reconnected to libvirt at %s after %.1f s", self.uri,
                     time.monotonic() - (lost_at or time.monotonic()))
        else:
            LOG.info("connected to libvirt at %s", self.uri)
        with self._lock:
            if self._lost_reason is None:  # not lost again while setting up
                self._connected.set()
        if restored:
            self._events.emit(LifecycleEvent(EventKind.CONNECTION_RESTORED, detail=self.uri))

    def _connect(self) -> None:
        conn = libvirt.open(self.uri)
        ids: list[int] = []
        try:
            conn.registerCloseCallback(self._on_close, None)
            try:
                conn.setKeepAlive(-1, 0)   # off: see the stall module
            except libvirt.libvirtError as exc:
                # Local drivers (test://, embedded) have no transport to
                # keep alive; that is fine.
                LOG.debug("keepalive not enabled on %s: %s", self.uri, exc)
            self._events.register(conn, ids)
        except Exception:
            close_quietly(conn, ids)
            raise
        with self._lock:
            self._conn = conn
            self._callback_ids = ids
            self._lost_reason = None
            self._opened_at = time.monotonic()

    def _detach(self) -> tuple[libvirt.virConnect | None, list[int]]:
        """Stop handing out the connection; new calls fail at once."""
        with self._lock:
            conn, ids = self._conn, self._callback_ids
            self._conn, self._callback_ids = None, []
            self._connected.clear()
        return conn, ids

    def _stalled(self) -> str | None:
        """Why the current connection counts as lost, if it stalled."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return None
            waited = self._calls.waiting_for(conn, time.monotonic(), self._opened_at)
        return self._stall.check(conn, waited)

    def _is_alive(self) -> bool:
        conn = self._conn
        with contextlib.suppress(libvirt.libvirtError):
            return conn is not None and bool(conn.isAlive())
        return False

    def _mark_lost(self, conn: libvirt.virConnect, reason: str) -> None:
        """Ask the connector to replace ``conn``, unless it already has."""
        with self._lock:
            if conn is not self._conn or self._lost_reason is not None:
                return
            self._lost_reason = reason
            self._connected.clear()
        self._wake.set()

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: object) -> None:
        """libvirt's close callback, on the event thread."""
        self._mark_lost(conn, "libvirt closed the connection (%s)"
                        % translate.close_reason(reason))
