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

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.hypervisor import bounded_reply, translate
from masakarimonitors_iim.hypervisor.connection import Connection
from masakarimonitors_iim.hypervisor.inventory import parse_domain_xml
from masakarimonitors_iim.hypervisor.timeouts import AgentTimeouts
from masakarimonitors_iim.hypervisor.types import (
    AgentChannel,
    AgentError,
    DomainInfo,
    DomainState,
    ErrorKind,
    HypervisorUnavailable,
    LifecycleEvent,
)

if TYPE_CHECKING:
    from masakarimonitors_iim.hypervisor.interface import HypervisorAPI

LOG = logging.getLogger(__name__)


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
            keepalive_interval=keepalive_interval, keepalive_count=keepalive_count,
            reconnect_max_interval=reconnect_max_interval)
        self._timeouts = AgentTimeouts(self._connection)
        self._max_reply_bytes = max_reply_bytes
        self._max_agent_calls = max_agent_calls
        self._agent_slots = threading.BoundedSemaphore(max_agent_calls)
        # One agent call per domain at a time: libvirt serialises them per
        # domain anyway, and a second caller would wait up to 30 s for the
        # domain's agent job, whatever timeout it asked for.
        self._domain_locks: dict[str, threading.Lock] = {}
        self._domain_locks_guard = threading.Lock()
        # Keyed by domain: one odd domain is warned about once, until it
        # reads well again or is no longer listed.
        self._unmonitored = LogOnce(LOG)

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
        self._timeouts.reapply_all()

    def _on_event(self, event: LifecycleEvent) -> None:
        self._timeouts.observe(event)
        if self._consumer is not None:
            self._consumer(event)

    # -- inventory and state ---------------------------------------------------

    def list_running_domains(self) -> list[DomainInfo]:
        """All active domains (running, paused, ...) with state and XML facts.

        A domain that vanishes while it is being read is left out. One that
        cannot be read or whose XML cannot be parsed is left unmonitored
        (left out, or listed with has_agent False) and warned about once,
        until it reads well again: one odd domain must not blind the
        monitor to all the others.
        """
        with self._connection.hold() as conn:
            try:
                domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            except libvirt.libvirtError as exc:
                raise self._connection.failure(conn, exc).unavailable(
                    "listing domains") from None
            result = []
            for dom in domains:
                try:
                    state, reason = dom.state()
                    xml = dom.XMLDesc(0)
                except libvirt.libvirtError as exc:
                    failure = self._connection.failure(conn, exc)
                    if failure.kind is ErrorKind.CONNECTION_LOST:
                        raise failure.unavailable("reading domains") from None
                    if failure.kind is not ErrorKind.NO_DOMAIN:
                        self._warn_unmonitored(dom, failure.message)
                    continue
                result.append(self._domain_info(dom, state, reason, xml))
        self._unmonitored.keep_only(dom.UUIDString() for dom in domains)
        return result

    def _domain_info(self, dom: libvirt.virDomain, state: int, reason: int,
                     xml: str) -> DomainInfo:
        try:
            has_agent, nova = parse_domain_xml(xml)
            self._unmonitored.resolved(key=dom.UUIDString())
        except ValueError as exc:
            self._warn_unmonitored(dom, str(exc))
            has_agent, nova = False, None
        return DomainInfo(uuid=dom.UUIDString(), name=dom.name(),
                          state=translate.domain_state_from(state, reason),
                          has_agent=has_agent, nova=nova)

    def _warn_unmonitored(self, dom: libvirt.virDomain, why: str) -> None:
        uuid = dom.UUIDString()
        # Once per domain whatever the reason: a reason that changes on
        # every listing (it may quote the XML) must not flood the log.
        if not self._unmonitored.active(uuid):
            self._unmonitored.problem("domain %s (%s) is not monitored: %s", uuid,
                                      dom.name(), why, key=uuid)

    def domain_state(self, uuid: str) -> DomainState:
        """The domain's state now, GONE if libvirt no longer knows it.

        Call it *after* an agent call failed: that is the state that
        decides the verdict. A RUNNING domain is also checked for a
        migration job, since pre-copy migration leaves no trace in the
        state itself.
        """
        with self._connection.hold() as conn:
            try:
                dom = conn.lookupByUUIDString(uuid)
                state, reason = dom.state()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return DomainState.GONE
                raise self._connection.failure(conn, exc).unavailable(
                    "reading state of %s" % uuid) from None
            migrating = state == libvirt.VIR_DOMAIN_RUNNING and self._migration_job(dom)
        return translate.domain_state_from(state, reason, migrating)

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
        """Keep libvirt's own agent timeout for the domain at ``timeout``
        (rounded up to whole seconds, at least 1), now and after every
        restart of the domain or reconnect to libvirtd; see
        :mod:`~masakarimonitors_iim.hypervisor.timeouts`. Never raises."""
        self._timeouts.set(uuid, timeout)

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
                    dom = conn.lookupByUUIDString(uuid)
                    reply = libvirt_qemu.qemuAgentCommand(dom, payload, seconds, 0)
                except libvirt.libvirtError as exc:
                    raise self._connection.failure(conn, exc).agent_error(command) from None
        except HypervisorUnavailable as exc:
            raise AgentError(ErrorKind.CONNECTION_LOST, "%s: %s" % (command, exc)) from None
        finally:
            self._agent_slots.release()
        # guest-exec-status is read bounded when oversized: its reply is
        # the only record of the exit code (see bounded_reply).
        return bounded_reply.parse_agent_reply(command, reply, self._max_reply_bytes)


if TYPE_CHECKING:
    def _check(h: Hypervisor) -> HypervisorAPI:
        return h
