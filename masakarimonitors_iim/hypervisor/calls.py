"""The few libvirt calls the monitor makes, on the shared connection.

While there is no connection, calls fail at once
(:class:`HypervisorUnavailable`, or an :class:`AgentError` of kind
CONNECTION_LOST for agent commands) instead of waiting for a reconnect.
"""
from __future__ import annotations

import json
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import libvirt
import libvirt_qemu
from oslo_log import log as logging

from masakarimonitors_iim.hypervisor import bounded_reply, counters, translate
from masakarimonitors_iim.hypervisor.connection import Connection
from masakarimonitors_iim.hypervisor.listing import Inventory, host_boot_id
from masakarimonitors_iim.hypervisor.timeouts import AgentTimeouts
from masakarimonitors_iim.hypervisor.types import (
    Activity,
    AgentChannel,
    AgentError,
    DomainInfo,
    DomainState,
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
    LifecycleEvent,
)

if TYPE_CHECKING:
    from masakarimonitors_iim.hypervisor.interface import HypervisorAPI

LOG = logging.getLogger(__name__)

#: Errors the agent itself replied with: it is alive.
_ANSWERED = (ErrorKind.COMMAND_DISABLED, ErrorKind.COMMAND_NOT_FOUND,
             ErrorKind.COMMAND_FAILED, ErrorKind.REPLY_TOO_LARGE)


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
    """What the monitor asks of libvirt (:class:`HypervisorAPI`).

    ``on_event`` is called on the libvirt event thread for every lifecycle
    event, including CONNECTION_LOST / CONNECTION_RESTORED. It must be
    cheap (queue the event, return); an exception in it is logged and the
    loop goes on. After CONNECTION_RESTORED, re-list the domains: events
    that happened while disconnected are gone. Agent timeouts set with
    :meth:`set_agent_timeout` are already set again by then.

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
        self._consumer = on_event
        self._connection = Connection(
            uri, self._on_event, on_connected=self._on_connected,
            on_changed=self._on_changed,
            keepalive_interval=keepalive_interval, keepalive_count=keepalive_count,
            reconnect_max_interval=reconnect_max_interval)
        self._timeouts = AgentTimeouts(self._connection)
        self._inventory = Inventory(self._connection, host_boot_id(uri))
        self._max_reply_bytes = max_reply_bytes
        self._max_agent_calls = max_agent_calls
        self._agent_slots = threading.BoundedSemaphore(max_agent_calls)
        # One agent call per domain at a time: libvirt serialises them per
        # domain anyway, and a second caller would wait up to 30 s for the
        # domain's agent job, whatever timeout it asked for.
        self._domain_locks: dict[str, threading.Lock] = {}
        self._domain_locks_guard = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; returns at once.

        Use :meth:`wait_connected` to wait for the first connection.
        """
        if self._connection.start():
            self._timeouts.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Close within ``timeout`` seconds; idempotent."""
        deadline = time.monotonic() + timeout
        self._timeouts.stop()
        self._connection.stop(timeout)
        self._timeouts.join(max(0.0, deadline - time.monotonic()))

    @property
    def connected(self) -> bool:
        """True while a connection is open and not known to be dead."""
        return self._connection.connected

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; False if none."""
        return self._connection.wait_connected(timeout)

    def _on_connected(self) -> None:
        self._inventory.reset()
        self._timeouts.reapply_all()

    def _on_changed(self, uuid: str) -> None:
        self._inventory.changed(uuid)

    def _on_event(self, event: LifecycleEvent) -> None:
        self._timeouts.observe(event)
        if event.kind is EventKind.DEFINED:
            self._inventory.changed(event.uuid)
        if self._consumer is not None:
            self._consumer(event)

    # -- inventory and state ---------------------------------------------------

    def list_running_domains(self) -> list[DomainInfo]:
        """All active domains (running, paused, ...) with state and XML
        facts; one RPC, plus one per domain that is new or changed (see
        :mod:`~masakarimonitors_iim.hypervisor.listing`)."""
        return self._inventory.list()

    def domain_state(self, uuid: str) -> DomainState:
        """The domain's state now, GONE if libvirt no longer knows it.

        Call it *after* an agent call failed: that is the state that
        decides the verdict. A RUNNING domain is also checked for a
        migration job, since pre-copy migration leaves no trace in the
        state itself.
        """
        with self._connection.hold() as conn:
            try:
                dom = self._inventory.handle(conn, uuid)
                state, reason = dom.state()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return DomainState.GONE
                raise self._connection.failure(conn, exc).unavailable(
                    "reading state of %s" % uuid) from None
            migrating = state == libvirt.VIR_DOMAIN_RUNNING and self._migration_job(dom)
        return translate.domain_state_from(state, reason, migrating)

    def domain_activity(self, uuid: str) -> Activity:
        """CPU time, and block and network byte counters of one domain:
        one call for the CPU time, one per disk and interface from the
        last listing's XML (see :mod:`~masakarimonitors_iim.hypervisor.stats`
        for why not the bulk call). None waits for the agent.

        Raises HypervisorUnavailable when libvirtd cannot be reached,
        AgentError(NO_DOMAIN) when the domain is gone or not running (no
        counters to compare), AgentError(OTHER) when it was not listed
        since libvirt (re)connected (its devices are not known yet). A
        device that is gone (unplugged since the listing) is left out.
        """
        return counters.read(self._connection, self._inventory, uuid)

    @staticmethod
    def _migration_job(dom: libvirt.virDomain) -> bool:
        """True when a migration job runs. Without a job libvirt answers
        from memory; during one it asks QEMU, which is why this is only
        done in domain_state (after a failure), not for every listing."""
        try:
            stats = dom.jobStats()
        except libvirt.libvirtError:
            return False  # unsupported driver, or the domain just went away
        return translate.is_migration_job(stats)

    # -- agent -------------------------------------------------------------------

    def set_agent_timeout(self, uuid: str, timeout: float) -> None:
        """Use ``timeout`` (rounded up to whole seconds, at least 1) as
        libvirt's agent response timeout for the domain while its agent is
        suspect (a command timed out), libvirt's default otherwise; see
        :mod:`~masakarimonitors_iim.hypervisor.timeouts`. No RPC; never
        raises."""
        self._timeouts.want(uuid, timeout)

    def agent_timeout_in_force(self, uuid: str) -> float | None:
        """The agent response timeout set on the domain by this monitor,
        None while it keeps libvirt's default."""
        return self._timeouts.in_force(uuid)

    def forget_domain(self, uuid: str) -> None:
        """Drop everything kept for a domain no longer monitored. Its agent
        lock stays while a call still holds it, so a clean-up call can
        never run beside a round's call on the same domain."""
        self._timeouts.forget(uuid)
        with self._domain_locks_guard:
            lock = self._domain_locks.get(uuid)
            if lock is not None and lock.acquire(blocking=False):
                del self._domain_locks[uuid]
                lock.release()

    def agent(self, uuid: str) -> AgentChannel:
        """The AgentChannel for one domain, as probes expect it."""
        return _BoundAgent(self, uuid)

    def agent_command(self, uuid: str, command: str, arguments: dict[str, Any] | None = None,
                      timeout: float = 2.0) -> Any:
        """Run one guest-agent command and return its ``return`` member.

        Raises AgentError for every failure, classified; never raises
        HypervisorUnavailable (that is CONNECTION_LOST here). libvirt takes
        whole seconds, so the timeout is rounded up, to at least 1 s: 0 or
        a negative value would mean "no wait" or "block forever" to it.
        Waiting for a free call slot counts against the timeout.
        """
        # A shortened agent timeout on its way to libvirt lands first, or
        # the call waits libvirt's 5 s guest-sync. Not taken from the
        # call's own timeout; a healthy domain never waits here.
        self._timeouts.await_settled(uuid)
        deadline = time.monotonic() + timeout
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        payload = json.dumps(request)
        if not self._connection.is_open:
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

    def _agent_command_locked(self, uuid: str, command: str, payload: str,
                              deadline: float) -> Any:
        timeout = deadline - time.monotonic()
        if not self._agent_slots.acquire(timeout=max(0.0, timeout)):
            raise AgentError(ErrorKind.AGENT_BUSY,
                             "%s: %d agent calls already in flight on the libvirt connection"
                             % (command, self._max_agent_calls))
        try:
            with self._connection.hold() as conn:
                seconds = max(1, math.ceil(deadline - time.monotonic()))
                try:
                    dom = self._inventory.handle(conn, uuid)
                    reply = libvirt_qemu.qemuAgentCommand(dom, payload, seconds, 0)
                except libvirt.libvirtError as exc:
                    error = self._connection.failure(conn, exc).agent_error(command)
                    self._note_agent(uuid, error.kind)
                    raise error from None
        except HypervisorUnavailable as exc:
            raise AgentError(ErrorKind.CONNECTION_LOST, "%s: %s" % (command, exc)) from None
        finally:
            self._agent_slots.release()
        # guest-exec-status is read bounded when oversized: its reply is
        # the only record of the exit code (see bounded_reply).
        try:
            result = bounded_reply.parse_agent_reply(command, reply, self._max_reply_bytes)
        except AgentError as error:
            self._note_agent(uuid, error.kind)
            raise
        self._timeouts.answered(uuid)
        return result

    def _note_agent(self, uuid: str, kind: ErrorKind) -> None:
        """Shorten libvirt's agent timeout while the agent hangs, give the
        default back once it answers (an error reply is an answer)."""
        if kind is ErrorKind.AGENT_TIMEOUT:
            self._timeouts.suspect(uuid)
        elif kind in _ANSWERED:
            self._timeouts.answered(uuid)


if TYPE_CHECKING:
    def _check(h: Hypervisor) -> HypervisorAPI:
        return h
