"""The monitor's one connection to libvirtd, kept alive in the background.

Worker threads share the connection (libvirt connections are
thread-safe). A background thread opens it, notices when it dies
(close callback, keepalive, or a call failing at the transport level) and
reopens it with exponential back-off; callers never wait for that: while
there is no connection they get :class:`HypervisorUnavailable` or an
:class:`AgentError` of kind CONNECTION_LOST at once.

libvirt RPCs other than agent commands have no timeout of their own;
keepalive bounds them: a hung libvirtd is declared dead after about
``keepalive_interval * (keepalive_count + 1)`` seconds and every call
blocked on it fails.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import time
from typing import Any, Callable, Iterator

import libvirt
import libvirt_qemu
from oslo_log import log as logging

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor import errors
from masakarimonitors_iim.hypervisor import eventloop
from masakarimonitors_iim.hypervisor.inventory import parse_domain_xml
from masakarimonitors_iim.hypervisor.types import (
    AgentChannel,
    AgentError,
    DomainInfo,
    DomainState,
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
    LifecycleEvent,
)

LOG = logging.getLogger(__name__)

#: First reconnect delay; it doubles per failed attempt up to the maximum.
RECONNECT_BASE_INTERVAL = 0.5

#: How long a replaced connection waits for calls still using it before it
#: is closed. On a dead connection they fail at once; closing under a call
#: that is still running would free memory that call uses, so past this
#: the old connection is left open (a small leak) rather than closed.
DRAIN_TIMEOUT = 10.0

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PMSUSPENDED,
}

# (state, reason) pairs libvirt uses while a migration owns the guest.
_MIGRATION_REASONS = {
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED),
}

_MIGRATION_JOBS = (libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
                   libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN)

_LIFECYCLE_KINDS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: EventKind.DEFINED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: EventKind.UNDEFINED,
    libvirt.VIR_DOMAIN_EVENT_STARTED: EventKind.STARTED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: EventKind.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: EventKind.RESUMED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: EventKind.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: EventKind.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: EventKind.PMSUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: EventKind.CRASHED,
}


def _constant_names(prefix: str) -> dict[int, str]:
    """{value: lower-case suffix} for libvirt constants named prefix*, so
    event details read "migrated" instead of 1."""
    return {getattr(libvirt, name): name[len(prefix):].lower()
            for name in dir(libvirt)
            if name.startswith(prefix) and not name.endswith("_LAST")}


# EventKind's lifecycle members are named after libvirt's events, so
# SUSPENDED's details are the VIR_DOMAIN_EVENT_SUSPENDED_* constants.
_DETAIL_NAMES = {
    event: _constant_names("VIR_DOMAIN_EVENT_%s_" % kind.name)
    for event, kind in _LIFECYCLE_KINDS.items()
}
_AGENT_REASONS = _constant_names("VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_")
_CLOSE_REASONS = _constant_names("VIR_CONNECT_CLOSE_REASON_")


def domain_state_from(state: int, reason: int, migration_job: bool = False) -> DomainState:
    """Map libvirt's (state, reason) to DomainState.

    libvirt has no "migrating" state: it shows a migration as RUNNING or
    PAUSED with a migration reason, and during pre-copy the source stays
    RUNNING with its old reason, which only the job (``migration_job``)
    reveals.
    """
    if (state, reason) in _MIGRATION_REASONS:
        return DomainState.MIGRATING
    if migration_job and state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
        return DomainState.MIGRATING
    return _STATES.get(state, DomainState.NOSTATE)


def lifecycle_event(event: int, detail: int, uuid: str, name: str) -> LifecycleEvent | None:
    """Translate VIR_DOMAIN_EVENT_ID_LIFECYCLE; None for event types this
    libvirt is newer than."""
    kind = _LIFECYCLE_KINDS.get(event)
    if kind is None:
        return None
    detail_name = _DETAIL_NAMES[event].get(detail, str(detail))
    return LifecycleEvent(kind, uuid, name, detail_name)


def agent_lifecycle_event(state: int, reason: int, uuid: str, name: str) -> LifecycleEvent | None:
    """Translate VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE (qemu-ga opened or
    closed its end of the channel)."""
    if state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED:
        kind = EventKind.AGENT_CONNECTED
    elif state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED:
        kind = EventKind.AGENT_DISCONNECTED
    else:
        return None
    return LifecycleEvent(kind, uuid, name, _AGENT_REASONS.get(reason, str(reason)))


def _error_parts(exc: libvirt.libvirtError) -> tuple[int, int, str]:
    code = exc.get_error_code() or 0
    domain = exc.get_error_domain() or 0
    message = exc.get_error_message() or str(exc)
    return code, domain, one_line(message)


class _BoundAgent:
    """The AgentChannel a probe gets: one domain's agent, nothing else."""

    def __init__(self, hypervisor: "Hypervisor", uuid: str) -> None:
        self._hypervisor = hypervisor
        self.domain_uuid = uuid

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 2.0) -> Any:
        return self._hypervisor.agent_command(self.domain_uuid, name, arguments, timeout)

    def __repr__(self) -> str:
        return "<agent of %s>" % self.domain_uuid


class Hypervisor:
    """A self-healing libvirt connection plus the few calls the monitor makes.

    ``on_event`` is called on the libvirt event thread for every lifecycle
    event, including CONNECTION_LOST / CONNECTION_RESTORED. It must be
    cheap (queue the event, return); an exception in it is logged and the
    loop goes on. After CONNECTION_RESTORED, re-list the domains: events
    that happened while disconnected are gone.

    One-shot: ``start`` after ``stop`` does nothing; make a new object.

    ``max_agent_calls`` caps agent commands in flight on the connection:
    libvirtd serves at most ``max_client_requests`` (default 5) calls per
    client at once, and a hung agent holds its slot for the whole
    timeout; keeping one slot free lets inventory and state calls through.
    """

    def __init__(self, uri: str, on_event: Callable[[LifecycleEvent], None] | None = None, *,
                 keepalive_interval: int = 5, keepalive_count: int = 3,
                 reconnect_max_interval: float = 30.0, max_reply_bytes: int = 1 << 20,
                 max_agent_calls: int = 4) -> None:
        self.uri = uri
        self._on_event = on_event
        self._keepalive_interval = keepalive_interval
        self._keepalive_count = keepalive_count
        self._reconnect_max_interval = reconnect_max_interval
        self._max_reply_bytes = max_reply_bytes
        self._max_agent_calls = max_agent_calls
        self._agent_slots = threading.BoundedSemaphore(max_agent_calls)
        # One agent call per domain at a time: libvirt serialises them per
        # domain anyway, and a second caller would wait up to 30 s for the
        # domain's agent job, whatever timeout it asked for.
        self._domain_locks: dict[str, threading.Lock] = {}
        self._domain_locks_guard = threading.Lock()

        # Guards the fields below; also signals when calls in flight drain.
        self._lock = threading.Condition()
        self._conn: libvirt.virConnect | None = None
        self._in_flight = 0
        self._callback_ids: list[int] = []
        self._lost_reason: str | None = None
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False

        # Log-once bookkeeping. The first is touched by the event thread
        # only, the sets by whoever calls; a race costs one extra line.
        self._event_callback_failing = False
        self._unmonitored_warned: set[str] = set()
        self._prepare_warned: set[str] = set()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the event loop and the connector thread; returns at once.

        Use :meth:`wait_connected` to wait for the first connection.
        """
        with self._lock:
            if self._started:
                return
            self._started = True
        eventloop.acquire()
        self._thread = threading.Thread(target=self._run, name="libvirt-connect", daemon=True)
        self._thread.start()

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

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; False if none."""
        return self._connected.wait(timeout)

    # -- connector thread --------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        last_error: str | None = None
        lost_at: float | None = None
        ever_connected = False
        try:
            while not self._stopping.is_set():
                if self._conn is None:
                    try:
                        self._connect()
                    except Exception as exc:  # libvirtError, or a bug in a callback
                        message = one_line(str(exc))
                        if message != last_error:
                            LOG.warning("cannot connect to libvirt at %s: %s; retrying "
                                        "with back-off up to %.0f s", self.uri, message,
                                        self._reconnect_max_interval)
                            last_error = message
                        self._wake.wait(self._backoff(attempt))
                        self._wake.clear()
                        attempt += 1
                        continue
                    attempt, last_error = 0, None
                    if not ever_connected:
                        LOG.info("connected to libvirt at %s", self.uri)
                        self._connected.set()
                        ever_connected = True
                    else:
                        LOG.info("reconnected to libvirt at %s after %.1f s", self.uri,
                                 time.monotonic() - (lost_at or time.monotonic()))
                        self._connected.set()
                        self._emit(LifecycleEvent(EventKind.CONNECTION_RESTORED,
                                                  detail=self.uri))
                # isAlive() is local (no RPC): it catches a dead socket even
                # if the close callback never comes.
                self._wake.wait(max(1.0, self._keepalive_interval))
                self._wake.clear()
                if self._stopping.is_set():
                    break
                reason = self._lost_reason
                if reason is None and not self._is_alive():
                    reason = "connection is no longer alive"
                if reason is not None:
                    LOG.warning("lost connection to libvirt at %s: %s", self.uri, reason)
                    lost_at = time.monotonic()
                    conn, ids = self._detach()
                    self._emit(LifecycleEvent(EventKind.CONNECTION_LOST, detail=reason))
                    self._close(conn, ids)
        except Exception:
            LOG.exception("libvirt connector thread failed; no further reconnects")
        finally:
            self._close(*self._detach())

    def _backoff(self, attempt: int) -> float:
        """Exponential with jitter, so many hosts do not all hammer a
        restarted libvirtd (or a shared one) in lock-step."""
        ceiling = min(self._reconnect_max_interval,
                      RECONNECT_BASE_INTERVAL * (2 ** min(attempt, 20)))
        return random.uniform(ceiling / 2, ceiling)

    def _connect(self) -> None:
        conn = libvirt.open(self.uri)
        ids: list[int] = []
        try:
            conn.registerCloseCallback(self._on_close, None)
            try:
                conn.setKeepAlive(self._keepalive_interval, self._keepalive_count)
            except libvirt.libvirtError as exc:
                # Local drivers (test://, embedded) have no transport to
                # keep alive; that is fine.
                LOG.debug("keepalive not enabled on %s: %s", self.uri, exc)
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None))
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None))
            ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._on_agent_lifecycle,
                None))
        except Exception:
            self._close_quietly(conn, ids)
            raise
        with self._lock:
            self._conn = conn
            self._callback_ids = ids
            self._lost_reason = None

    def _detach(self) -> tuple[libvirt.virConnect | None, list[int]]:
        """Stop handing out the connection; new calls fail at once."""
        with self._lock:
            conn, ids = self._conn, self._callback_ids
            self._conn, self._callback_ids = None, []
            self._connected.clear()
        return conn, ids

    def _close(self, conn: libvirt.virConnect | None, ids: list[int]) -> None:
        """Close a detached connection once no call uses it any more."""
        if conn is None:
            return
        with self._lock:
            drained = self._lock.wait_for(lambda: self._in_flight == 0, DRAIN_TIMEOUT)
        if drained:
            self._close_quietly(conn, ids)
        else:
            LOG.warning("libvirt calls still running %.0f s after the connection to %s was "
                        "dropped; leaving the old connection open", DRAIN_TIMEOUT, self.uri)

    @staticmethod
    def _close_quietly(conn: libvirt.virConnect, ids: list[int]) -> None:
        """Best effort: on a dead connection each of these fails fast."""
        for callback_id in ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def _is_alive(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _mark_lost(self, conn: libvirt.virConnect, reason: str) -> None:
        """Ask the connector to replace ``conn``, unless it already has."""
        with self._lock:
            if conn is not self._conn or self._lost_reason is not None:
                return
            self._lost_reason = reason
            self._connected.clear()
        self._wake.set()

    # -- libvirt callbacks (event thread) -------------------------------------

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: object) -> None:
        self._mark_lost(conn, "libvirt closed the connection (%s)"
                        % _CLOSE_REASONS.get(reason, str(reason)))

    def _on_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                      event: int, detail: int, opaque: object) -> None:
        translated = lifecycle_event(event, detail, dom.UUIDString(), dom.name())
        if translated is not None:
            self._deliver(translated)

    def _on_reboot(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                   opaque: object) -> None:
        self._deliver(LifecycleEvent(EventKind.REBOOTED, dom.UUIDString(), dom.name()))

    def _on_agent_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                            state: int, reason: int, opaque: object) -> None:
        translated = agent_lifecycle_event(state, reason, dom.UUIDString(), dom.name())
        if translated is not None:
            self._deliver(translated)

    def _emit(self, event: LifecycleEvent) -> None:
        """Hand a connection-level event to the event thread, so the
        consumer sees all events from one thread, in order."""
        if not eventloop.call_soon(lambda: self._deliver(event)):
            self._deliver(event)

    def _deliver(self, event: LifecycleEvent) -> None:
        if self._on_event is None or self._stopping.is_set():
            return
        try:
            self._on_event(event)
        except Exception:
            if not self._event_callback_failing:
                LOG.exception("event consumer failed on %s; later failures are not "
                              "logged until it succeeds again", event)
                self._event_callback_failing = True
            return
        if self._event_callback_failing:
            LOG.info("event consumer is accepting events again")
            self._event_callback_failing = False

    # -- calls used by the monitor -------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[libvirt.virConnect]:
        """The current connection, kept open (not closed under us by a
        reconnect) until the block ends."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise HypervisorUnavailable("not connected to libvirt at %s" % self.uri)
            self._in_flight += 1
        try:
            yield conn
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._lock.notify_all()

    def _unavailable(self, conn: libvirt.virConnect, exc: libvirt.libvirtError,
                     doing: str) -> HypervisorUnavailable:
        code, domain, message = _error_parts(exc)
        if errors.classify(code, domain, message) is ErrorKind.CONNECTION_LOST:
            self._mark_lost(conn, message)
        return HypervisorUnavailable("%s failed: %s" % (doing, message))

    def list_running_domains(self) -> list[DomainInfo]:
        """All active domains (running, paused, ...) with state and XML facts.

        A domain that vanishes while it is being read is left out. One that
        cannot be read or whose XML cannot be parsed is left unmonitored
        (left out, or listed with has_agent False) and warned about once,
        until it reads well again: one odd domain must not blind the
        monitor to all the others.
        """
        with self._connection() as conn:
            try:
                domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            except libvirt.libvirtError as exc:
                raise self._unavailable(conn, exc, "listing domains") from None
            result = []
            for dom in domains:
                try:
                    state, reason = dom.state()
                    xml = dom.XMLDesc(0)
                except libvirt.libvirtError as exc:
                    code, domain, message = _error_parts(exc)
                    kind = errors.classify(code, domain, message)
                    if kind is ErrorKind.CONNECTION_LOST:
                        raise self._unavailable(conn, exc, "reading domains") from None
                    if kind is not ErrorKind.NO_DOMAIN:
                        self._warn_unmonitored(dom, message)
                    continue
                result.append(self._domain_info(dom, state, reason, xml))
        self._unmonitored_warned &= {dom.UUIDString() for dom in domains}
        return result

    def _domain_info(self, dom: libvirt.virDomain, state: int, reason: int,
                     xml: str) -> DomainInfo:
        try:
            has_agent, nova = parse_domain_xml(xml)
            self._unmonitored_warned.discard(dom.UUIDString())
        except ValueError as exc:
            self._warn_unmonitored(dom, str(exc))
            has_agent, nova = False, None
        return DomainInfo(uuid=dom.UUIDString(), name=dom.name(),
                          state=domain_state_from(state, reason),
                          has_agent=has_agent, nova=nova)

    def _warn_unmonitored(self, dom: libvirt.virDomain, why: str) -> None:
        uuid = dom.UUIDString()
        if uuid not in self._unmonitored_warned:
            LOG.warning("domain %s (%s) is not monitored: %s", uuid, dom.name(), why)
            self._unmonitored_warned.add(uuid)

    def domain_state(self, uuid: str) -> DomainState:
        """The domain's state now, GONE if libvirt no longer knows it.

        Call it *after* an agent call failed: that is the state that
        decides the verdict. A RUNNING domain is also checked for a
        migration job, since pre-copy migration leaves no trace in the
        state itself.
        """
        with self._connection() as conn:
            try:
                dom = conn.lookupByUUIDString(uuid)
                state, reason = dom.state()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return DomainState.GONE
                raise self._unavailable(conn, exc, "reading state of %s" % uuid) from None
            migrating = state == libvirt.VIR_DOMAIN_RUNNING and self._migration_job(dom)
        return domain_state_from(state, reason, migrating)

    @staticmethod
    def _migration_job(dom: libvirt.virDomain) -> bool:
        """True when a migration job runs. Without a job libvirt answers
        from memory; during one it asks QEMU, which is why this is only
        done in domain_state (after a failure), not for every listing."""
        try:
            stats = dom.jobStats()
        except libvirt.libvirtError:
            return False  # unsupported driver, or the domain just went away
        return (stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE
                and stats.get(libvirt.VIR_DOMAIN_JOB_OPERATION) in _MIGRATION_JOBS)

    def prepare_agent(self, uuid: str, timeout: float) -> None:
        """Make libvirt's own agent timeout match ours.

        After one timed-out command, libvirt re-syncs with the agent before
        each later one and waits the per-domain agent timeout (default
        5 s) for that, ignoring the per-call timeout. Setting it to our
        timeout keeps a hung guest from costing 5 s per call. libvirt keeps
        the value with the running domain: call again after the domain
        (re)starts or libvirt reconnects. Errors are logged, not raised.
        """
        try:
            with self._connection() as conn:
                try:
                    dom = conn.lookupByUUIDString(uuid)
                    dom.agentSetResponseTimeout(max(1, math.ceil(timeout)), 0)
                except libvirt.libvirtError as exc:
                    code, domain, message = _error_parts(exc)
                    kind = errors.classify(code, domain, message)
                    if kind is ErrorKind.CONNECTION_LOST:
                        self._mark_lost(conn, message)
                    self._log_prepare_failure(uuid, kind, message)
                    return
        except HypervisorUnavailable as exc:
            LOG.debug("cannot set agent timeout of %s: %s", uuid, exc)
            return
        self._prepare_warned.discard(uuid)

    def _log_prepare_failure(self, uuid: str, kind: ErrorKind, message: str) -> None:
        quiet = (ErrorKind.CONNECTION_LOST, ErrorKind.NO_DOMAIN, ErrorKind.DOMAIN_NOT_RUNNING)
        # UNSUPPORTED is a property of libvirt (older than 5.10, or not
        # QEMU), not of the domain: say it once, not once per guest.
        key = "*" if kind is ErrorKind.UNSUPPORTED else uuid
        if kind in quiet or key in self._prepare_warned:
            LOG.debug("cannot set agent timeout of %s: %s", uuid, message)
            return
        LOG.warning("cannot set the agent timeout of %s, so a hung agent will cost "
                    "libvirt's default 5 s per call%s: %s", uuid,
                    " (same for every domain on this host)" if key == "*" else "", message)
        self._prepare_warned.add(key)

    def agent_command(self, uuid: str, command: str, arguments: dict | None = None,
                      timeout: float = 2.0) -> Any:
        """Run one guest-agent command and return its ``return`` member.

        Raises AgentError for every failure, classified; never raises
        HypervisorUnavailable (that is CONNECTION_LOST here). libvirt takes
        whole seconds, so the timeout is rounded up, to at least 1 s: 0 or
        a negative value would mean "no wait" or "block forever" to it.
        Waiting for a free call slot counts against the timeout.
        """
        deadline = time.monotonic() + timeout
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        payload = json.dumps(request)
        if self._conn is None:
            raise AgentError(ErrorKind.CONNECTION_LOST,
                             "%s: not connected to libvirt at %s" % (command, self.uri))
        with self._domain_locks_guard:
            domain_lock = self._domain_locks.setdefault(uuid, threading.Lock())
        if not domain_lock.acquire(timeout=max(0.0, timeout)):
            raise AgentError(ErrorKind.AGENT_BUSY,
                             "%s: another agent call to this domain is still in flight"
                             % command)
        try:
            return self._agent_command_locked(uuid, command, payload, deadline)
        finally:
            domain_lock.release()

    def forget_domain(self, uuid: str) -> None:
        """Drop per-domain bookkeeping of a domain that is gone."""
        with self._domain_locks_guard:
            self._domain_locks.pop(uuid, None)

    def _agent_command_locked(self, uuid: str, command: str, payload: str,
                              deadline: float) -> Any:
        timeout = deadline - time.monotonic()
        if not self._agent_slots.acquire(timeout=max(0.0, timeout)):
            raise AgentError(ErrorKind.AGENT_BUSY,
                             "%s: %d agent calls already in flight on the libvirt connection"
                             % (command, self._max_agent_calls))
        try:
            with self._connection() as conn:
                seconds = max(1, math.ceil(deadline - time.monotonic()))
                try:
                    dom = conn.lookupByUUIDString(uuid)
                    reply = libvirt_qemu.qemuAgentCommand(dom, payload, seconds, 0)
                except libvirt.libvirtError as exc:
                    code, domain, message = _error_parts(exc)
                    kind = errors.classify(code, domain, message)
                    if kind is ErrorKind.CONNECTION_LOST:
                        self._mark_lost(conn, message)
                    raise AgentError(kind, "%s: %s" % (command, message),
                                     code, domain) from None
        except HypervisorUnavailable as exc:
            raise AgentError(ErrorKind.CONNECTION_LOST, "%s: %s" % (command, exc)) from None
        finally:
            self._agent_slots.release()
        return self._parse_reply(command, reply)

    def _parse_reply(self, command: str, reply: str | None) -> Any:
        if reply is None:
            raise AgentError(ErrorKind.BAD_REPLY, "%s: empty reply" % command)
        size = len(reply.encode("utf-8", "replace"))
        if size > self._max_reply_bytes:
            raise AgentError(ErrorKind.BAD_REPLY, "%s: reply of %d bytes exceeds the %d-byte "
                             "limit" % (command, size, self._max_reply_bytes))
        try:
            parsed = json.loads(reply)
        except ValueError as exc:
            raise AgentError(ErrorKind.BAD_REPLY,
                             "%s: reply is not JSON: %s" % (command, exc)) from None
        if isinstance(parsed, dict) and "return" in parsed:
            return parsed["return"]
        if isinstance(parsed, dict) and "error" in parsed:
            error = parsed["error"]
            desc = error.get("desc", error) if isinstance(error, dict) else error
            raise AgentError(ErrorKind.COMMAND_FAILED,
                             "%s: %s" % (command, one_line(str(desc))))
        raise AgentError(ErrorKind.BAD_REPLY,
                         "%s: reply has no 'return' member: %s"
                         % (command, one_line(reply, 120)))

    def agent(self, uuid: str) -> AgentChannel:
        """The AgentChannel for one domain, as probes expect it."""
        return _BoundAgent(self, uuid)
