"""libvirt's per-domain agent response timeout, shortened only while suspect.

After one timed-out command, libvirt re-syncs with the agent before each
later one and waits the domain's agent response timeout (default 5 s)
for that, ignoring the per-call timeout. Setting it to the probe timeout
keeps a hung guest from costing 5 s per call.

But the setting is domain-wide: Nova's own agent calls on the domain
(fsfreeze for a quiesced snapshot, set-password) get it too. So a healthy
domain keeps libvirt's default (the value libvirt starts every domain
with, see :data:`DEFAULT`), and the monitor leaves no trace on it:
the wanted value is only remembered (:meth:`AgentTimeouts.want`), applied
when one of the domain's agent commands times out (:meth:`suspect`), and
libvirt's default is restored when the agent answers again
(:meth:`answered`) or the domain is no longer monitored (:meth:`forget`).

libvirtd keeps the value with the running QEMU process: a domain that
starts again has forgotten it, and a libvirtd that restarts may have. So
what is in force is set again on those occasions, and nothing above the
hypervisor layer needs to know.

Every RPC is made on the thread started here, never on the caller's: the
callers are the libvirt event thread (which must not make RPCs: it would
stall every event and keepalive), the connector thread, and workers in
the middle of a probe round.
"""
from __future__ import annotations

import math
import threading

import libvirt
from oslo_log import log as logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.hypervisor.connection import Connection
from masakarimonitors_iim.hypervisor.translate import Failure
from masakarimonitors_iim.hypervisor.types import (
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
    LifecycleEvent,
)

LOG = logging.getLogger(__name__)

#: Events after which the domain runs in a new QEMU process (or may: a
#: guest reboot can be turned into destroy + start by the domain's config).
RESTART_EVENTS = (EventKind.STARTED, EventKind.REBOOTED)

#: What a domain holds until someone sets it: libvirt (9.0, measured on
#: the testbed through the domain's status XML) starts every domain at
#: VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK (-2): commands that use the
#: domain's timeout, such as Nova's fsfreeze, wait as long as the agent
#: needs; only guest-sync is capped at 5 s. "Restoring" with
#: VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT (-1) would instead give those
#: commands 5 s, a trace on the domain; so the initial value is restored.
DEFAULT = libvirt.VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK

#: Longest a call waits for a shortened timeout to reach libvirt
#: (:meth:`AgentTimeouts.await_settled`). Sets are made one after another
#: on one thread: on the loaded CI testbed, three guests hung at once, the
#: third landed 0.5 s after its re-probe began to wait. Up to 2 s still
#: beats the 5 s guest-sync it saves (with the default 2 s timeout).
SETTLE_WAIT = 2.0

#: In ``_in_force``: libvirt may hold anything (restart, reconnect); set
#: the target again whatever it is.
_UNKNOWN = -100

# Failures that say nothing about the setting: the domain is gone or not
# running (its next process starts with the default), or libvirtd is
# unreachable (a reconnect sets it again).
_QUIET = (ErrorKind.CONNECTION_LOST, ErrorKind.NO_DOMAIN, ErrorKind.DOMAIN_NOT_RUNNING)
_PROCESS_GONE = (ErrorKind.NO_DOMAIN, ErrorKind.DOMAIN_NOT_RUNNING)


def seconds(timeout: float) -> int:
    """libvirt takes whole seconds; 0 or less would mean "no wait" or
    "block forever" to it."""
    return max(1, math.ceil(timeout))


def target(wanted: float | None, suspect: bool) -> int:
    """What libvirt should hold for a domain: the wanted value while its
    agent is suspect, libvirt's initial value otherwise."""
    if wanted is None or not suspect:
        return DEFAULT
    return seconds(wanted)


class AgentTimeouts:
    """Per domain: the timeout wanted, whether the agent is suspect, and
    what libvirt holds; a thread makes libvirt hold the target.

    ``_in_force`` has an entry only for domains where libvirt holds (or
    may hold) something other than its default, so a host of healthy
    domains costs no RPC at all.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # Guards the fields below; never held during an RPC.
        self._cond = threading.Condition()
        self._wanted: dict[str, float] = {}
        self._suspect: set[str] = set()
        self._in_force: dict[str, int] = {}
        self._pending: set[str] = set()
        # The domain the thread is setting now (its RPC in flight).
        self._busy: str | None = None
        # Bumped whenever what libvirt holds becomes unknown (restart,
        # reconnect), so a call in flight then cannot record its value.
        self._marks = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Keyed by domain, or "*" for what holds for every domain.
        self._warned = LogOnce(LOG)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, name="libvirt-agent-timeouts",
                                            daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish; does not wait (see :meth:`join`)."""
        with self._cond:
            if self._thread is None:
                return
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- what callers say (cheap, no RPC) -----------------------------------------

    def want(self, uuid: str, timeout: float) -> None:
        """Remember the timeout to use while the domain is suspect."""
        with self._cond:
            self._wanted[uuid] = timeout
            if uuid in self._suspect or uuid in self._in_force:
                self._queue(uuid)

    def suspect(self, uuid: str) -> None:
        """An agent command of the domain timed out: shorten libvirt's wait.
        Only for a monitored domain: a clean-up call that times out after
        :meth:`forget` must leave nothing for a later watch to apply."""
        with self._cond:
            if uuid in self._wanted and uuid not in self._suspect:
                self._suspect.add(uuid)
                self._queue(uuid)

    def answered(self, uuid: str) -> None:
        """The agent answered: give the domain libvirt's default back."""
        with self._cond:
            if uuid in self._suspect:
                self._suspect.discard(uuid)
                self._queue(uuid)

    def forget(self, uuid: str) -> None:
        """No longer monitored: restore the default if anything was set."""
        with self._cond:
            self._wanted.pop(uuid, None)
            self._suspect.discard(uuid)
            if uuid in self._in_force:
                self._queue(uuid)
            else:
                self._pending.discard(uuid)
                self._warned.resolved(key=uuid)

    def await_settled(self, uuid: str, timeout: float = SETTLE_WAIT) -> None:
        """Wait, at most ``timeout`` seconds, until the thread has set
        what the domain should hold. Called before an agent command: the
        re-probe of a guest whose quick first call just timed out would
        otherwise reach libvirt before the shortened timeout, and wait
        libvirt's 5 s guest-sync (measured on the testbed). Returns at once
        for a domain with nothing to set, which is every healthy one."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._stopping or (uuid not in self._pending and self._busy != uuid),
                timeout)

    def in_force(self, uuid: str) -> float | None:
        """Seconds this monitor has set for the domain, None for libvirt's
        default (or not known to be set yet)."""
        with self._cond:
            value = self._in_force.get(uuid)
        return float(value) if value is not None and value > 0 else None

    def reapply_all(self) -> None:
        """A new connection: libvirtd may have restarted and forgotten.
        Queue every domain that is or should be set. Cheap, no RPC."""
        with self._cond:
            self._marks += 1
            # A suspect domain's first set may be in flight: unknown too.
            for uuid in set(self._in_force) | self._suspect:
                self._in_force[uuid] = _UNKNOWN
                self._queue(uuid)

    def observe(self, event: LifecycleEvent) -> None:
        """Note a domain that (may have) restarted, for the thread to set
        again; cheap, no RPC (called on the event thread). A new QEMU
        process has a new agent, not known to hang: it gets the default,
        set explicitly if the monitor had set something before."""
        if event.kind not in RESTART_EVENTS:
            return
        with self._cond:
            if event.kind is EventKind.STARTED:
                self._suspect.discard(event.uuid)
            if event.uuid in self._in_force or event.uuid in self._suspect:
                self._marks += 1
                self._in_force[event.uuid] = _UNKNOWN
                self._queue(event.uuid)

    def _queue(self, uuid: str) -> None:
        if not self._stopping:
            self._pending.add(uuid)
            self._cond.notify_all()

    # -- the thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                uuid = self._pending.pop()
                self._busy = uuid
            try:
                self._reconcile(uuid)
            except Exception:
                LOG.exception("setting the agent timeout of %s failed", uuid)
            finally:
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()     # await_settled

    def _reconcile(self, uuid: str) -> None:
        """Set the target until what is set is the target: a change racing
        an RPC must not be undone by the older value landing last."""
        while True:
            with self._cond:
                want = target(self._wanted.get(uuid), uuid in self._suspect)
                held = self._in_force.get(uuid, DEFAULT)
                marks = self._marks
            if want == held:
                return
            outcome = self._set_now(uuid, want)
            with self._cond:
                if outcome is None:  # unreachable: a reconnect queues it again
                    return
                if (outcome != DEFAULT and marks != self._marks
                        and self._in_force.get(uuid) == _UNKNOWN):
                    # Restarted (or reconnected) during the call: the new
                    # process may not hold the value; set it again. (The
                    # default it starts with needs no second call.)
                    continue
                if outcome == _UNKNOWN:
                    # The connection died during the call: libvirtd may
                    # have applied it. Kept as unknown so that the next
                    # change or reconnect sets the target again, rather
                    # than a short timeout staying on a healthy domain.
                    self._in_force[uuid] = _UNKNOWN
                    return
                if outcome == DEFAULT:
                    self._in_force.pop(uuid, None)
                else:
                    self._in_force[uuid] = outcome
                if outcome != want:
                    # The domain is not running: its next process starts
                    # with the default (and a STARTED event queues it
                    # again). Trying again now would only spin on libvirtd.
                    return

    def _set_now(self, uuid: str, value: int) -> int | None:
        """Set ``value``; returns what libvirt now holds, None if unchanged
        as far as known (not sent, or refused), ``_UNKNOWN`` if the
        connection died during the call (it may have been applied)."""
        try:
            with self._connection.hold() as conn:
                try:
                    dom = conn.lookupByUUIDString(uuid)
                    dom.agentSetResponseTimeout(value, 0)
                except libvirt.libvirtError as exc:
                    failure = self._connection.failure(conn, exc)
                    self._log_failure(uuid, failure)
                    # A domain not running has no process holding a value;
                    # its next one starts with the default.
                    if failure.kind in _PROCESS_GONE:
                        return DEFAULT
                    return _UNKNOWN if failure.kind is ErrorKind.CONNECTION_LOST else None
        except HypervisorUnavailable as exc:
            LOG.debug("cannot set agent timeout of %s: %s", uuid, exc)
            return None
        self._warned.resolved(key=uuid)
        LOG.debug("agent timeout of %s is now %s", uuid,
                  "libvirt's default" if value == DEFAULT else "%d s" % value)
        return value

    def _log_failure(self, uuid: str, failure: Failure) -> None:
        # UNSUPPORTED is a property of libvirt (older than 5.10, or not
        # QEMU), not of the domain: say it once, not once per guest.
        key = "*" if failure.kind is ErrorKind.UNSUPPORTED else uuid
        if failure.kind in _QUIET or self._warned.active(key):
            LOG.debug("cannot set agent timeout of %s: %s", uuid, failure.message)
            return
        self._warned.problem(
            "cannot set the agent timeout of %s, so a hung agent will cost libvirt's "
            "default 5 s per call%s: %s", uuid,
            " (same for every domain on this host)" if key == "*" else "", failure.message,
            key=key)
