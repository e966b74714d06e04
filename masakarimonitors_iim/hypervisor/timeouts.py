"""libvirt's per-domain agent response timeout, kept set.

After one timed-out command, libvirt re-syncs with the agent before each
later one and waits the domain's agent response timeout (default 5 s)
for that, ignoring the per-call timeout. Setting it to the probe timeout
keeps a hung guest from costing 5 s per call. libvirtd keeps the value
with the running QEMU process, in its own memory: a domain that starts
again or a libvirtd that restarts has forgotten it. So what was asked for
is remembered here and set again on those occasions, and nothing above
the hypervisor layer needs to know libvirtd forgets.
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

# Failures that say nothing about the setting: the domain is gone or not
# running (it is set again when it starts), or libvirtd is (reconnect).
_QUIET = (ErrorKind.CONNECTION_LOST, ErrorKind.NO_DOMAIN, ErrorKind.DOMAIN_NOT_RUNNING)


class AgentTimeouts:
    """Remembered agent response timeouts, applied now and again later.

    Domains restarting are noticed on the libvirt event thread, which must
    not make RPCs (it would stall every event and keepalive): it only
    queues the domain for the thread started here. A reconnect queues
    every remembered domain the same way (:meth:`reapply_all`), so the
    connector thread announces the reconnect without waiting on one RPC
    per domain.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # Guards the three fields below; never held during an RPC.
        self._cond = threading.Condition()
        self._timeouts: dict[str, float] = {}
        self._pending: set[str] = set()
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

    def set(self, uuid: str, timeout: float) -> None:
        """Remember ``timeout`` for the domain and apply it now (blocks for
        one RPC). Never raises: failures are logged."""
        with self._cond:
            self._timeouts[uuid] = timeout
        self._apply(uuid)

    def forget(self, uuid: str) -> None:
        with self._cond:
            self._timeouts.pop(uuid, None)
            self._pending.discard(uuid)
        self._warned.resolved(key=uuid)

    def reapply_all(self) -> None:
        """Queue every remembered timeout for the thread (a new connection:
        libvirtd may have restarted). Cheap, no RPC."""
        with self._cond:
            if not self._stopping:
                self._pending.update(self._timeouts)
                self._cond.notify_all()

    def observe(self, event: LifecycleEvent) -> None:
        """Note a domain that restarted, for the thread to set again; cheap,
        no RPC (called on the event thread)."""
        if event.kind not in RESTART_EVENTS:
            return
        with self._cond:
            if event.uuid in self._timeouts and not self._stopping:
                self._pending.add(event.uuid)
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                uuid = self._pending.pop()
            try:
                self._apply(uuid)
            except Exception:
                LOG.exception("setting the agent timeout of %s failed", uuid)

    def _apply(self, uuid: str) -> None:
        """Set the remembered value until what was set is what is
        remembered: a :meth:`set` racing a re-apply must not be undone by
        the re-apply's older value landing last."""
        applied: float | None = None
        while True:
            with self._cond:
                timeout = self._timeouts.get(uuid)
            if timeout is None or timeout == applied:
                return
            self._set_now(uuid, timeout)
            applied = timeout

    def _set_now(self, uuid: str, timeout: float) -> None:
        try:
            with self._connection.hold() as conn:
                try:
                    dom = conn.lookupByUUIDString(uuid)
                    dom.agentSetResponseTimeout(max(1, math.ceil(timeout)), 0)
                except libvirt.libvirtError as exc:
                    self._log_failure(uuid, self._connection.failure(conn, exc))
                    return
        except HypervisorUnavailable as exc:
            LOG.debug("cannot set agent timeout of %s: %s", uuid, exc)
            return
        self._warned.resolved(key=uuid)

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
