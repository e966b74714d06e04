"""The connection's domain events, translated and handed to the consumer.

Everything here runs on the libvirt event thread, so the consumer sees
every event, the connection's own CONNECTION_LOST / CONNECTION_RESTORED
included, from that one thread and in order.
"""
from __future__ import annotations

import logging as std_logging
import threading
from typing import Callable

import libvirt
from oslo_log import log as logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.hypervisor import eventloop, translate
from masakarimonitors_iim.hypervisor.types import EventKind, LifecycleEvent

LOG = logging.getLogger(__name__)


class EventRelay:
    """Registers the domain callbacks on each new connection and passes
    what they report on.

    ``on_event`` is called for every lifecycle event, including
    CONNECTION_LOST / CONNECTION_RESTORED, one at a time and in order. It
    must be cheap; an exception in it is logged (once until it succeeds
    again) and the loop goes on.

    ``on_changed`` gets the UUID of a domain whose XML libvirt says
    changed (device added or removed, metadata changed); like
    ``on_event`` it must only take note.

    ``stale`` says whether a connection was replaced: one whose calls
    return once libvirtd continues also delivers the events it queued
    meanwhile, stale by then (the relisting after the reconnect covers
    them). Nothing is passed on once ``stopping`` is set.
    """

    def __init__(self, on_event: Callable[[LifecycleEvent], None] | None,
                 on_changed: Callable[[str], None] | None, *,
                 stale: Callable[[libvirt.virConnect], bool],
                 stopping: threading.Event) -> None:
        self._on_event = on_event
        self._on_changed = on_changed
        self._stale = stale
        self._stopping = stopping
        self._consumer_failing = LogOnce(LOG)  # event thread only

    def register(self, conn: libvirt.virConnect, ids: list[int]) -> None:
        """Register the callbacks on ``conn``, adding each id to ``ids`` at
        once, so that a failure part-way can still deregister the rest."""
        for event_id, callback in (
                (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
                (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot),
                (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._on_agent_lifecycle),
                (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._on_device),
                (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device),
                (libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, self._on_metadata)):
            ids.append(conn.domainEventRegisterAny(None, event_id, callback, None))

    def emit(self, event: LifecycleEvent) -> None:
        """Hand a connection-level event to the event thread, so the
        consumer sees all events from one thread, in order."""
        if not eventloop.call_soon(lambda: self._deliver(event)):
            self._deliver(event)

    # -- libvirt callbacks -------------------------------------------------------

    def _on_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                      event: int, detail: int, opaque: object) -> None:
        if self._stale(conn):
            return
        self._deliver(translate.lifecycle_event(event, detail, dom.UUIDString(), dom.name()))

    def _on_reboot(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                   opaque: object) -> None:
        if self._stale(conn):
            return
        self._deliver(LifecycleEvent(EventKind.REBOOTED, dom.UUIDString(), dom.name()))

    def _on_agent_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                            state: int, reason: int, opaque: object) -> None:
        if self._stale(conn):
            return
        self._deliver(translate.agent_lifecycle_event(state, reason, dom.UUIDString(),
                                                      dom.name()))

    def _on_device(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                   alias: str, opaque: object) -> None:
        self._changed(dom)

    def _on_metadata(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                     mtype: int, nsuri: str | None, opaque: object) -> None:
        self._changed(dom)

    def _changed(self, dom: libvirt.virDomain) -> None:
        if self._on_changed is None or self._stopping.is_set():
            return
        try:
            self._on_changed(dom.UUIDString())
        except Exception:
            LOG.exception("noting a change of domain %s failed", dom.UUIDString())

    def _deliver(self, event: LifecycleEvent | None) -> None:
        """``event`` is None for a kind this libvirt is newer than."""
        if event is None or self._on_event is None or self._stopping.is_set():
            return
        try:
            self._on_event(event)
        except Exception:
            # Checked first: the message names the event, so LogOnce alone
            # would log every failure.
            if not self._consumer_failing.active():
                self._consumer_failing.problem(
                    "event consumer failed on %s; later failures are not logged until it "
                    "succeeds again", event, level=std_logging.ERROR, exc_info=True)
            return
        self._consumer_failing.resolved("event consumer is accepting events again")
