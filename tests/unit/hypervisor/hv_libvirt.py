"""Helpers for tests against libvirt's real test driver (test:///default).

The test driver keeps one shared state per process while any connection
to it is open, so every test makes its own uniquely named domains and
removes them, and filters events by UUID. It cannot talk to guest agents
(every agent call is VIR_ERR_NO_SUPPORT); agent replies are faked at the
libvirt_qemu.qemuAgentCommand boundary, and reconnects at libvirt.open.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid as uuidlib

import hv_recorded
import libvirt

from masakarimonitors_iim.hypervisor.calls import Hypervisor
from masakarimonitors_iim.hypervisor.types import EventKind, LifecycleEvent

URI = "test:///default"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # the driver's built-in "test"
REAL_OPEN = libvirt.open
#: The hypervisor layer's loggers (connection, calls, timeouts) all sit under this one.
LOGGER = "masakarimonitors_iim.hypervisor"

NOVA_METADATA = """<metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>web-01</nova:name>
      <nova:flavor name="m1.small"/>
      <nova:owner><nova:user uuid="u1">alice</nova:user>
        <nova:project uuid="p1">shop</nova:project></nova:owner>
      <nova:root type="image" uuid="img-1"/>
    </nova:instance>
  </metadata>"""


class Events:
    """on_event sink that tests can wait on."""

    def __init__(self) -> None:
        self.queue: queue.Queue[LifecycleEvent] = queue.Queue()
        self.threads: set[str] = set()

    def __call__(self, event: LifecycleEvent) -> None:
        self.threads.add(threading.current_thread().name)
        self.queue.put(event)

    def next(self, match, timeout: float = 5.0) -> LifecycleEvent:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no matching event within %.1f s" % timeout)
            try:
                event = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if match(event):
                return event

    def of(self, uuid: str, count: int, timeout: float = 5.0) -> list[tuple[EventKind, str]]:
        return [(e.kind, e.detail) for e in
                (self.next(lambda e: e.uuid == uuid, timeout) for _ in range(count))]

    def kind(self, kind: EventKind, timeout: float = 5.0) -> LifecycleEvent:
        return self.next(lambda e: e.kind is kind, timeout)

    def drain(self, uuid: str, settle: float = 0.3) -> list[LifecycleEvent]:
        time.sleep(settle)
        found = []
        while True:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                return found
            if event.uuid == uuid:
                found.append(event)


class Domains:
    """Makes uniquely named test-driver domains and removes them after."""

    def __init__(self) -> None:
        self.conn = REAL_OPEN(URI)
        self.made: list[libvirt.virDomain] = []

    def xml(self, agent: bool = True, nova: bool = False, devices: str = "") -> str:
        name = "hvtest-" + uuidlib.uuid4().hex[:10]
        channel = ("<channel type='unix'><target type='virtio' "
                   "name='org.qemu.guest_agent.0'/></channel>") if agent else ""
        return ("<domain type='test'><name>%s</name>%s<memory>65536</memory>"
                "<os><type>hvm</type></os><devices>%s%s</devices></domain>"
                % (name, NOVA_METADATA if nova else "", devices, channel))

    def make(self, start: bool = True, agent: bool = True, nova: bool = False,
             devices: str = "") -> libvirt.virDomain:
        """``devices``: more device XML (disks, interfaces); the test
        driver keeps counters for them (derived from the clock)."""
        dom = self.conn.defineXML(self.xml(agent, nova, devices))
        self.made.append(dom)
        if start:
            dom.create()
        return dom

    def cleanup(self) -> None:
        for dom in self.made:
            for step in (dom.destroy, dom.undefine):
                try:
                    step()
                except libvirt.libvirtError:
                    pass
        self.conn.close()


def start(events=None, **kwargs) -> Hypervisor:
    kwargs.setdefault("keepalive_interval", 1)
    kwargs.setdefault("reconnect_max_interval", 0.05)
    hv = Hypervisor(URI, events, **kwargs)
    hv.start()
    return hv


def messages(caplog, fragment: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith(LOGGER) and r.levelno == level
            and fragment in r.getMessage()]


class FakeAgent:
    """Stands in for libvirt_qemu.qemuAgentCommand."""

    def __init__(self, reply=None, error=None, gate: threading.Event | None = None) -> None:
        self.reply = '{"return": {}}' if reply is None else reply
        self.error = error
        self.gate = gate
        self.entered = threading.Event()
        self.calls: list[tuple[str, str, int, int]] = []

    def __call__(self, dom, payload, timeout, flags):
        self.calls.append((dom.UUIDString(), payload, timeout, flags))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return self.reply


class ConnProxy:
    """A real test:///default connection whose close callback, liveness
    and event callbacks the test controls (the test driver never loses
    the connection and sends no reboot or agent events)."""

    def __init__(self, real: libvirt.virConnect) -> None:
        self._real = real
        self.close_callback = None
        self.alive = True
        self.closed = threading.Event()
        self.list_error: libvirt.libvirtError | None = None
        self.callbacks: dict[int, object] = {}

    def registerCloseCallback(self, cb, opaque):
        self.close_callback = cb
        return self._real.registerCloseCallback(cb, opaque)

    def domainEventRegisterAny(self, dom, event_id, cb, opaque):
        self.callbacks[event_id] = cb
        return self._real.domainEventRegisterAny(dom, event_id, cb, opaque)

    def fire(self, event_id, dom, *args):
        """Call the registered callback as libvirt would, for events the
        test driver never sends (reboot, agent lifecycle)."""
        self.callbacks[event_id](self, dom, *args, None)

    def isAlive(self):
        return self.alive and self._real.isAlive()

    def listAllDomains(self, flags=0):
        if self.list_error is not None:
            raise self.list_error
        return self._real.listAllDomains(flags)

    def close(self):
        self.closed.set()
        return self._real.close()

    def lose(self, reason=libvirt.VIR_CONNECT_CLOSE_REASON_EOF):
        self.close_callback(self, reason, None)

    def __getattr__(self, name):
        return getattr(self._real, name)


class FakeOpen:
    """Stands in for libvirt.open: fails ``failures`` times as a missing
    libvirtd does, optionally blocks on ``gate``, then opens for real."""

    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.failures = failures
        self.gate = gate
        self.calls = 0
        self.conns: list[ConnProxy] = []

    def __call__(self, uri):
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise hv_recorded.libvirt_error(*hv_recorded.CONNECT_FAILED)
        proxy = ConnProxy(REAL_OPEN(uri))
        self.conns.append(proxy)
        return proxy


def patch_open(monkeypatch, fake: FakeOpen) -> FakeOpen:
    monkeypatch.setattr(libvirt, "open", fake)
    return fake
