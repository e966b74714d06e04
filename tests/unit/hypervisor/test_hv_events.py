"""Passing a connection's domain events on (hypervisor.events), with
stand-ins for the connection; test_hv_connection drives the same code
through libvirt's test driver."""
from __future__ import annotations

import logging
import threading

import libvirt
import pytest
from hv_libvirt import LOGGER, messages

from masakarimonitors_iim.hypervisor import eventloop
from masakarimonitors_iim.hypervisor.events import EventRelay
from masakarimonitors_iim.hypervisor.types import EventKind, LifecycleEvent

E = libvirt
STALE, CURRENT = object(), object()


class Dom:
    def UUIDString(self):
        return "u1"

    def name(self):
        return "vm1"


class Conn:
    """Hands out callback ids; fails the ``fail_at``-th registration."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.callbacks: dict[int, object] = {}

    def domainEventRegisterAny(self, dom, event_id, callback, opaque):
        if len(self.callbacks) == self.fail_at:
            raise libvirt.libvirtError("no more")
        self.callbacks[event_id] = callback
        return 100 + len(self.callbacks)


@pytest.fixture
def relay():
    seen: list[LifecycleEvent] = []
    changed: list[str] = []
    stopping = threading.Event()
    r = EventRelay(seen.append, changed.append, stale=lambda conn: conn is STALE,
                   stopping=stopping)
    conn = Conn()
    ids: list[int] = []
    r.register(conn, ids)
    return r, conn.callbacks, seen, changed, stopping, ids


def test_register_adds_the_six_callbacks_in_order(relay):
    _, callbacks, _, _, _, ids = relay
    assert list(callbacks) == [
        E.VIR_DOMAIN_EVENT_ID_LIFECYCLE, E.VIR_DOMAIN_EVENT_ID_REBOOT,
        E.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, E.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
        E.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, E.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE]
    assert ids == [101, 102, 103, 104, 105, 106]


def test_a_failed_registration_keeps_the_ids_so_far():
    ids: list[int] = []
    with pytest.raises(libvirt.libvirtError):
        EventRelay(None, None, stale=lambda conn: False,
                   stopping=threading.Event()).register(Conn(fail_at=2), ids)
    assert ids == [101, 102]    # for the caller to deregister


@pytest.mark.parametrize("event_id, args, kind", [
    (E.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
     (E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED), EventKind.STARTED),
    (E.VIR_DOMAIN_EVENT_ID_REBOOT, (), EventKind.REBOOTED),
    (E.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,
     (E.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED, 2),
     EventKind.AGENT_CONNECTED),
])
def test_domain_events_from_a_replaced_connection_are_dropped(relay, event_id, args, kind):
    _, callbacks, seen, _, _, _ = relay
    callbacks[event_id](STALE, Dom(), *args, None)
    assert seen == []
    callbacks[event_id](CURRENT, Dom(), *args, None)
    assert [(e.kind, e.uuid, e.name) for e in seen] == [(kind, "u1", "vm1")]


@pytest.mark.parametrize("event_id, args", [
    (E.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, ("disk1",)),
    (E.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, ("net0",)),
    (E.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, (E.VIR_DOMAIN_METADATA_ELEMENT, "urn:x")),
])
def test_device_and_metadata_changes_name_the_domain(relay, event_id, args):
    _, callbacks, seen, changed, stopping, _ = relay
    callbacks[event_id](CURRENT, Dom(), *args, None)
    assert changed == ["u1"] and seen == []
    stopping.set()
    callbacks[event_id](CURRENT, Dom(), *args, None)
    assert changed == ["u1"]


def test_a_failing_change_consumer_is_logged_and_the_callback_returns(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)

    def broken(uuid):
        raise RuntimeError("bug")

    conn = Conn()
    EventRelay(None, broken, stale=lambda c: False,
               stopping=threading.Event()).register(conn, [])
    conn.callbacks[E.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED](CURRENT, Dom(), "disk1", None)
    assert messages(caplog, "noting a change of domain u1 failed", logging.ERROR)


def test_nothing_is_passed_on_once_stopping(relay):
    r, callbacks, seen, _, stopping, _ = relay
    stopping.set()
    callbacks[E.VIR_DOMAIN_EVENT_ID_REBOOT](CURRENT, Dom(), None)
    r.emit(LifecycleEvent(EventKind.CONNECTION_LOST, detail="x"))
    assert seen == []


def test_emit_without_an_event_loop_delivers_on_the_calling_thread(relay):
    r, _, seen, _, _, _ = relay
    assert not eventloop.running()
    r.emit(LifecycleEvent(EventKind.CONNECTION_LOST, detail="eof"))
    assert [(e.kind, e.detail) for e in seen] == [(EventKind.CONNECTION_LOST, "eof")]
