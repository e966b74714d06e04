"""The libvirt connection (hypervisor.connection) against libvirt's test driver.

Driven through :class:`Hypervisor`, as the monitor uses it: starting and
stopping, event delivery, and losing and regaining libvirtd. See
hv_libvirt for how the test driver is used.
"""
from __future__ import annotations

import logging
import threading
import time

import hv_recorded
import libvirt
import pytest
from hv_libvirt import (
    LOGGER,
    TEST_DOMAIN_UUID,
    URI,
    FakeAgent,
    FakeOpen,
    messages,
    patch_open,
    start,
)

from masakarimonitors_iim.hypervisor import calls, eventloop
from masakarimonitors_iim.hypervisor.calls import Hypervisor
from masakarimonitors_iim.hypervisor.connection import Connection
from masakarimonitors_iim.hypervisor.types import (
    AgentError,
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
)


# -- start / stop ---------------------------------------------------------------

def test_start_connect_stop(events):
    h = Hypervisor(URI, events)
    h.stop()  # before start: nothing to do
    h.start()
    h.start()
    assert h.wait_connected(5)
    assert h.connected
    began = time.monotonic()
    h.stop()
    h.stop()
    assert time.monotonic() - began < 1.5
    assert not h.connected
    time.sleep(0.1)
    alive = {t.name for t in threading.enumerate()}
    assert "libvirt-connect" not in alive
    assert "libvirt-events" not in alive
    assert not eventloop.running()


def test_wait_connected_times_out_when_never_started():
    h = Hypervisor(URI)
    assert not h.wait_connected(0.05)
    assert not h.connected


# -- events ---------------------------------------------------------------------

def test_lifecycle_events_are_translated(hv, events, domains):
    dom = domains.make(start=False)
    uuid = dom.UUIDString()
    dom.create()
    dom.suspend()
    dom.resume()
    dom.shutdown()
    dom.create()
    dom.destroy()
    dom.undefine()
    assert events.of(uuid, 8) == [
        (EventKind.DEFINED, "added"),
        (EventKind.STARTED, "booted"),
        (EventKind.SUSPENDED, "paused"),
        (EventKind.RESUMED, "unpaused"),
        (EventKind.STOPPED, "shutdown"),
        (EventKind.STARTED, "booted"),
        (EventKind.STOPPED, "destroyed"),
        (EventKind.UNDEFINED, "removed"),
    ]
    assert events.threads == {"libvirt-events"}


def test_a_failing_consumer_is_logged_once_and_events_keep_flowing(domains, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    seen = []
    failing = {"on": True}

    def consumer(event):
        if failing["on"]:
            raise RuntimeError("consumer bug")
        seen.append(event)

    h = start(consumer)
    try:
        assert h.wait_connected(5)
        dom = domains.make()
        dom.suspend()
        dom.resume()
        time.sleep(0.3)
        assert len(messages(caplog, "event consumer failed", logging.ERROR)) == 1
        failing["on"] = False
        dom.suspend()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e.kind for e in seen] == [EventKind.SUSPENDED]
        assert len(messages(caplog, "accepting events again", logging.INFO)) == 1
    finally:
        h.stop()


class _FakeDom:
    def UUIDString(self):
        return "u"

    def name(self):
        return "n"


def test_reboot_and_agent_callbacks_deliver(events, monkeypatch):
    # The test driver fires neither; call the callbacks registered with it.
    fake = patch_open(monkeypatch, FakeOpen())
    h = start(events)
    try:
        assert h.wait_connected(5)
        fake.conns[0].fire(libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, _FakeDom())
        fake.conns[0].fire(libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, _FakeDom(), 1, 2)
        assert events.of("u", 2) == [(EventKind.REBOOTED, ""),
                                     (EventKind.AGENT_CONNECTED, "channel")]
    finally:
        h.stop()


# -- losing and regaining libvirtd --------------------------------------------------

def test_connect_retries_with_backoff_and_logs_once(events, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = patch_open(monkeypatch, FakeOpen(failures=3))
    h = start(events)
    try:
        assert h.wait_connected(5)
        assert fake.calls == 4
        assert len(messages(caplog, "cannot connect to libvirt")) == 1
        assert len(messages(caplog, "connected to libvirt", logging.INFO)) == 1
        assert events.queue.empty()  # a first connection is not a "restore"
    finally:
        h.stop()


def test_backoff_grows_to_the_maximum_with_jitter():
    c = Connection(URI, reconnect_max_interval=30.0)
    first = [c.reconnect_delay(1) for _ in range(50)]
    late = [c.reconnect_delay(31) for _ in range(50)]
    assert all(0.25 <= d <= 0.5 for d in first)
    assert all(15.0 <= d <= 30.0 for d in late)
    assert len(set(late)) > 1


def test_close_callback_leads_to_reconnect(events, domains, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = patch_open(monkeypatch, FakeOpen())
    h = start(events)
    try:
        assert h.wait_connected(5)
        first = fake.conns[0]
        fake.failures = 2  # libvirtd takes a moment to come back
        first.lose()
        lost = events.kind(EventKind.CONNECTION_LOST)
        assert "eof" in lost.detail
        events.kind(EventKind.CONNECTION_RESTORED)
        assert h.connected
        assert first.closed.is_set()
        assert len(fake.conns) == 2
        assert len(messages(caplog, "lost connection")) == 1
        assert len(messages(caplog, "reconnected", logging.INFO)) == 1
        # Callbacks were registered again, once.
        dom = domains.make(start=False)
        assert events.of(dom.UUIDString(), 1) == [(EventKind.DEFINED, "added")]
        assert events.drain(dom.UUIDString()) == []
        assert events.threads == {"libvirt-events"}
    finally:
        h.stop()


def test_dead_socket_is_noticed_without_a_close_callback(events, monkeypatch):
    fake = patch_open(monkeypatch, FakeOpen())
    h = start(events)
    try:
        assert h.wait_connected(5)
        fake.conns[0].alive = False
        assert "no longer alive" in events.kind(EventKind.CONNECTION_LOST).detail
        events.kind(EventKind.CONNECTION_RESTORED)
    finally:
        h.stop()


def test_transport_error_in_a_call_leads_to_reconnect(events, monkeypatch):
    fake = patch_open(monkeypatch, FakeOpen())
    agent = FakeAgent(error=hv_recorded.libvirt_error(*hv_recorded.SOCKET_CLOSED))
    monkeypatch.setattr(calls.libvirt_qemu, "qemuAgentCommand", agent)
    h = start(events)
    try:
        assert h.wait_connected(5)
        with pytest.raises(AgentError) as info:
            h.agent_command(TEST_DOMAIN_UUID, "guest-ping")
        assert info.value.kind is ErrorKind.CONNECTION_LOST
        assert "client socket is closed" in events.kind(EventKind.CONNECTION_LOST).detail
        events.kind(EventKind.CONNECTION_RESTORED)

        fake.conns[-1].list_error = hv_recorded.libvirt_error(*hv_recorded.KEEPALIVE_TIMEOUT)
        with pytest.raises(HypervisorUnavailable, match="keepalive"):
            h.list_running_domains()
        events.kind(EventKind.CONNECTION_LOST)
        events.kind(EventKind.CONNECTION_RESTORED)
        assert len(fake.conns) == 3
    finally:
        h.stop()


def test_calls_while_libvirtd_is_down_fail_fast(events, monkeypatch):
    patch_open(monkeypatch, FakeOpen(failures=10 ** 6))
    h = start(events)
    try:
        assert not h.wait_connected(0.2)
        began = time.monotonic()
        with pytest.raises(HypervisorUnavailable):
            h.list_running_domains()
        with pytest.raises(HypervisorUnavailable):
            h.domain_state(TEST_DOMAIN_UUID)
        with pytest.raises(AgentError) as info:
            h.agent_command(TEST_DOMAIN_UUID, "guest-ping")
        assert info.value.kind is ErrorKind.CONNECTION_LOST
        h.set_agent_timeout(TEST_DOMAIN_UUID, 2)
        assert time.monotonic() - began < 0.1
    finally:
        began = time.monotonic()
        h.stop()
        assert time.monotonic() - began < 1.0


def test_reconnect_waits_for_calls_still_using_the_old_connection(events, monkeypatch):
    fake = patch_open(monkeypatch, FakeOpen())
    gate = threading.Event()
    agent = FakeAgent(gate=gate, error=hv_recorded.libvirt_error(*hv_recorded.SOCKET_CLOSED))
    monkeypatch.setattr(calls.libvirt_qemu, "qemuAgentCommand", agent)
    h = start(events)
    outcome = []

    def call():
        try:
            h.agent_command(TEST_DOMAIN_UUID, "guest-ping", timeout=5)
        except AgentError as exc:
            outcome.append(exc.kind)

    try:
        assert h.wait_connected(5)
        first = fake.conns[0]
        caller = threading.Thread(target=call)
        caller.start()
        assert agent.entered.wait(5)
        first.lose()
        events.kind(EventKind.CONNECTION_LOST)
        assert not first.closed.wait(0.3)  # not closed under the running call
        gate.set()
        caller.join(5)
        assert outcome == [ErrorKind.CONNECTION_LOST]
        assert first.closed.wait(5)
        events.kind(EventKind.CONNECTION_RESTORED)
    finally:
        gate.set()
        h.stop()


def test_stop_does_not_wait_for_a_hung_connect(events, monkeypatch):
    gate = threading.Event()
    fake = patch_open(monkeypatch, FakeOpen(gate=gate))
    h = start(events)
    try:
        deadline = time.monotonic() + 5
        while fake.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        began = time.monotonic()
        h.stop(timeout=0.3)
        assert time.monotonic() - began < 1.0
    finally:
        gate.set()
    # The connect finishes late; the stopping thread closes what it got.
    deadline = time.monotonic() + 5
    while not fake.conns and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.conns[0].closed.wait(5)


# -- event loop -------------------------------------------------------------------

def test_call_soon_runs_on_the_event_thread(hv):
    ran = threading.Event()
    names = []

    def job():
        names.append(threading.current_thread().name)
        ran.set()

    assert eventloop.call_soon(job)
    assert ran.wait(5)
    assert names == ["libvirt-events"]


def test_call_soon_refuses_when_the_loop_is_stopped():
    assert not eventloop.running()
    assert not eventloop.call_soon(lambda: None)


def test_libvirt_keepalive_is_off(events, monkeypatch):
    """libvirt 9.0's keepalive closed connections under waiting calls and
    the process died when libvirtd continued (see hypervisor.stall)."""
    seen = []

    class Recording(FakeOpen):
        def __call__(self, uri):
            proxy = super().__call__(uri)
            proxy.setKeepAlive = lambda interval, count: seen.append((interval, count))
            return proxy
    patch_open(monkeypatch, Recording())
    h = start(events)
    try:
        assert h.wait_connected(5)
        assert seen == [(-1, 0)]
    finally:
        h.stop()


def test_a_stalled_libvirtd_is_lost_and_its_waiting_call_returns_before_the_close(
        events, monkeypatch, caplog):
    """A call waits past the stall limit while libvirtd answers nothing
    (the half-time check waits too): the connection is lost, new calls
    fail at once, and the old connection is closed only once the waiting
    call returned."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = patch_open(monkeypatch, FakeOpen())
    gate = threading.Event()
    agent = FakeAgent(gate=gate, reply='{"return": {}}')
    monkeypatch.setattr(calls.libvirt_qemu, "qemuAgentCommand", agent)
    h = start(events, keepalive_interval=1, keepalive_count=1)   # stall limit 2 s
    outcome = []

    def call():
        try:
            outcome.append(h.agent_command(TEST_DOMAIN_UUID, "guest-ping", timeout=30))
        except AgentError as exc:
            outcome.append(exc.kind)

    try:
        assert h.wait_connected(5)
        first = fake.conns[0]
        monkeypatch.setattr(first, "getLibVersion", lambda: gate.wait(30), raising=False)
        caller = threading.Thread(target=call)
        caller.start()
        assert agent.entered.wait(5)
        lost = events.kind(EventKind.CONNECTION_LOST)
        assert "libvirtd answered no call for" in lost.detail
        assert not first.closed.wait(0.3)       # never closed under the waiting call
        events.kind(EventKind.CONNECTION_RESTORED)
        gate.set()                              # libvirtd continues
        caller.join(5)
        assert outcome == [{}]                  # it returned normally
        assert first.closed.wait(5)             # and only then was closed
        assert len(messages(caplog, "still wait on the replaced connection",
                            logging.INFO)) == 1
    finally:
        gate.set()
        h.stop()
