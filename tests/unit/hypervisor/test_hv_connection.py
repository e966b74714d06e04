"""Hypervisor against libvirt's real test driver (test:///default).

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
import pytest

from masakarimonitors_iim.hypervisor import connection, eventloop
from masakarimonitors_iim.hypervisor.connection import (
    Hypervisor,
    agent_lifecycle_event,
    domain_state_from,
    lifecycle_event,
)
from masakarimonitors_iim.hypervisor.types import (
    AgentError,
    DomainState,
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
    LifecycleEvent,
)

URI = "test:///default"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # the driver's built-in "test"
REAL_OPEN = libvirt.open
LOGGER = "masakarimonitors_iim.hypervisor.connection"

NOVA_METADATA = """<metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>web-01</nova:name>
      <nova:flavor name="m1.small"/>
      <nova:owner><nova:user uuid="u1">alice</nova:user>
        <nova:project uuid="p1">shop</nova:project></nova:owner>
      <nova:root type="image" uuid="img-1"/>
    </nova:instance>
  </metadata>"""


@pytest.fixture(scope="module", autouse=True)
def _event_impl_registered():
    # The test driver arms its event timer when a callback is registered;
    # make sure the default event implementation exists before any
    # connection in this module is opened.
    eventloop.acquire()
    eventloop.release()


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

    def xml(self, agent: bool = True, nova: bool = False) -> str:
        name = "hvtest-" + uuidlib.uuid4().hex[:10]
        channel = ("<channel type='unix'><target type='virtio' "
                   "name='org.qemu.guest_agent.0'/></channel>") if agent else ""
        return ("<domain type='test'><name>%s</name>%s<memory>65536</memory>"
                "<os><type>hvm</type></os><devices>%s</devices></domain>"
                % (name, NOVA_METADATA if nova else "", channel))

    def make(self, start: bool = True, agent: bool = True, nova: bool = False) -> libvirt.virDomain:
        dom = self.conn.defineXML(self.xml(agent, nova))
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


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def domains():
    d = Domains()
    yield d
    d.cleanup()


def _start(events=None, **kwargs) -> Hypervisor:
    kwargs.setdefault("keepalive_interval", 1)
    kwargs.setdefault("reconnect_max_interval", 0.05)
    hv = Hypervisor(URI, events, **kwargs)
    hv.start()
    return hv


@pytest.fixture
def hv(events):
    h = _start(events)
    assert h.wait_connected(5)
    yield h
    h.stop()


def _messages(caplog, fragment: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == level and fragment in r.getMessage()]


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


# -- inventory ----------------------------------------------------------------

def test_list_running_domains(hv, domains):
    running = domains.make()
    paused = domains.make()
    paused.suspend()
    inactive = domains.make(start=False)
    no_agent = domains.make(agent=False)
    nova = domains.make(nova=True)

    infos = {info.uuid: info for info in hv.list_running_domains()}

    assert infos[running.UUIDString()].state is DomainState.RUNNING
    assert infos[running.UUIDString()].has_agent
    assert infos[running.UUIDString()].name == running.name()
    assert infos[running.UUIDString()].nova is None
    assert infos[paused.UUIDString()].state is DomainState.PAUSED
    assert inactive.UUIDString() not in infos
    assert not infos[no_agent.UUIDString()].has_agent
    meta = infos[nova.UUIDString()].nova
    assert (meta.instance_name, meta.flavor_name, meta.user_name, meta.project_name,
            meta.image_uuid) == ("web-01", "m1.small", "alice", "shop", "img-1")
    assert TEST_DOMAIN_UUID in infos


def test_unparsable_xml_is_unmonitored_and_warned_once(hv, domains, monkeypatch, caplog):
    dom = domains.make()
    broken = {"on": True}
    real_parse = connection.parse_domain_xml

    def parse(xml):
        if broken["on"] and dom.name() in xml:
            raise ValueError("domain XML is malformed: simulated")
        return real_parse(xml)

    monkeypatch.setattr(connection, "parse_domain_xml", parse)
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def listed():
        return next(i for i in hv.list_running_domains() if i.uuid == dom.UUIDString())

    assert not listed().has_agent
    assert not listed().has_agent
    assert len(_messages(caplog, "is not monitored")) == 1
    broken["on"] = False
    assert listed().has_agent
    broken["on"] = True
    assert not listed().has_agent
    assert len(_messages(caplog, "is not monitored")) == 2


def test_one_unreadable_domain_does_not_hide_the_others(hv, domains, monkeypatch, caplog):
    good, odd, gone = domains.make(), domains.make(), domains.make()
    errors_by_name = {
        odd.name(): (9, 10, "operation failed: simulated"),
        gone.name(): hv_recorded.TEST_DRIVER_NO_DOMAIN,
    }
    real_state = libvirt.virDomain.state

    def state(self, flags=0):
        if self.name() in errors_by_name:
            raise hv_recorded.libvirt_error(*errors_by_name[self.name()])
        return real_state(self, flags)

    monkeypatch.setattr(libvirt.virDomain, "state", state)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(2):
        listed = {i.uuid for i in hv.list_running_domains()}
        assert good.UUIDString() in listed
        assert odd.UUIDString() not in listed and gone.UUIDString() not in listed
    warnings = _messages(caplog, "is not monitored")
    assert len(warnings) == 1 and odd.UUIDString() in warnings[0]

    errors_by_name[odd.name()] = hv_recorded.SOCKET_CLOSED
    with pytest.raises(HypervisorUnavailable, match="client socket is closed"):
        hv.list_running_domains()


def test_domain_state(hv, domains):
    running = domains.make()
    paused = domains.make()
    paused.suspend()
    inactive = domains.make(start=False)
    assert hv.domain_state(running.UUIDString()) is DomainState.RUNNING
    assert hv.domain_state(paused.UUIDString()) is DomainState.PAUSED
    assert hv.domain_state(inactive.UUIDString()) is DomainState.SHUTOFF
    assert hv.domain_state(str(uuidlib.uuid4())) is DomainState.GONE
    running.destroy()
    running.undefine()
    assert hv.domain_state(running.UUIDString()) is DomainState.GONE


@pytest.mark.parametrize("stats,expected", [
    ({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
      libvirt.VIR_DOMAIN_JOB_OPERATION: libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT},
     DomainState.MIGRATING),
    ({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
      libvirt.VIR_DOMAIN_JOB_OPERATION: libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT},
     DomainState.RUNNING),
    ({"type": libvirt.VIR_DOMAIN_JOB_NONE}, DomainState.RUNNING),
])
def test_domain_state_sees_precopy_migration_job(hv, domains, monkeypatch, stats, expected):
    dom = domains.make()
    monkeypatch.setattr(libvirt.virDomain, "jobStats", lambda self, flags=0: stats)
    assert hv.domain_state(dom.UUIDString()) is expected


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

    h = _start(consumer)
    try:
        assert h.wait_connected(5)
        dom = domains.make()
        dom.suspend()
        dom.resume()
        time.sleep(0.3)
        assert len(_messages(caplog, "event consumer failed", logging.ERROR)) == 1
        failing["on"] = False
        dom.suspend()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e.kind for e in seen] == [EventKind.SUSPENDED]
        assert len(_messages(caplog, "accepting events again", logging.INFO)) == 1
    finally:
        h.stop()


@pytest.mark.parametrize("event,detail,expected", [
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_UPDATED,
     (EventKind.DEFINED, "updated")),
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
     (EventKind.STARTED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
     (EventKind.SUSPENDED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
     (EventKind.SUSPENDED, "ioerror")),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY,
     (EventKind.SUSPENDED, "postcopy")),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
     (EventKind.RESUMED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
     (EventKind.STOPPED, "failed")),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
     (EventKind.STOPPED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST,
     (EventKind.SHUTDOWN, "guest")),
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_HOST,
     (EventKind.SHUTDOWN, "host")),
    (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED_MEMORY,
     (EventKind.PMSUSPENDED, "memory")),
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED,
     (EventKind.CRASHED, "panicked")),
    (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED,
     (EventKind.UNDEFINED, "removed")),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, 99, (EventKind.STOPPED, "99")),
    (99, 0, None),
])
def test_lifecycle_event_table(event, detail, expected):
    translated = lifecycle_event(event, detail, "u", "n")
    if expected is None:
        assert translated is None
    else:
        assert (translated.kind, translated.detail) == expected
        assert (translated.uuid, translated.name) == ("u", "n")


@pytest.mark.parametrize("state,reason,expected", [
    (libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED,
     libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_CHANNEL,
     (EventKind.AGENT_CONNECTED, "channel")),
    (libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED,
     libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_DOMAIN_STARTED,
     (EventKind.AGENT_DISCONNECTED, "domain_started")),
    (libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED, 0,
     (EventKind.AGENT_DISCONNECTED, "unknown")),
    (3, 0, None),
])
def test_agent_lifecycle_event_table(state, reason, expected):
    translated = agent_lifecycle_event(state, reason, "u", "n")
    if expected is None:
        assert translated is None
    else:
        assert (translated.kind, translated.detail) == expected


class _FakeDom:
    def UUIDString(self):
        return "u"

    def name(self):
        return "n"


def test_reboot_and_agent_callbacks_deliver(events):
    # The test driver fires neither; call the registered callbacks directly.
    h = Hypervisor(URI, events)
    h._on_reboot(None, _FakeDom(), None)
    h._on_agent_lifecycle(None, _FakeDom(), 1, 2, None)
    assert events.of("u", 2) == [(EventKind.REBOOTED, ""), (EventKind.AGENT_CONNECTED, "channel")]


R, P = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED


@pytest.mark.parametrize("state,reason,job,expected", [
    (R, libvirt.VIR_DOMAIN_RUNNING_BOOTED, False, DomainState.RUNNING),
    (R, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED, False, DomainState.RUNNING),  # recorded [1, 5]
    (R, libvirt.VIR_DOMAIN_RUNNING_MIGRATED, False, DomainState.RUNNING),  # arrived, done
    (R, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY, False, DomainState.MIGRATING),
    (R, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED, False, DomainState.MIGRATING),
    (R, libvirt.VIR_DOMAIN_RUNNING_BOOTED, True, DomainState.MIGRATING),
    (P, libvirt.VIR_DOMAIN_PAUSED_USER, False, DomainState.PAUSED),
    (P, libvirt.VIR_DOMAIN_PAUSED_IOERROR, False, DomainState.PAUSED),
    (P, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, False, DomainState.MIGRATING),
    (P, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, False, DomainState.MIGRATING),
    (P, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, False, DomainState.MIGRATING),
    (libvirt.VIR_DOMAIN_NOSTATE, 0, False, DomainState.NOSTATE),
    (libvirt.VIR_DOMAIN_BLOCKED, 0, False, DomainState.BLOCKED),
    (libvirt.VIR_DOMAIN_SHUTDOWN, 1, False, DomainState.SHUTDOWN),
    (libvirt.VIR_DOMAIN_SHUTOFF, 1, False, DomainState.SHUTOFF),
    (libvirt.VIR_DOMAIN_SHUTOFF, 1, True, DomainState.SHUTOFF),
    (libvirt.VIR_DOMAIN_CRASHED, 1, False, DomainState.CRASHED),
    (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, False, DomainState.PMSUSPENDED),
    (42, 0, False, DomainState.NOSTATE),
])
def test_domain_state_table(state, reason, job, expected):
    assert domain_state_from(state, reason, job) is expected


# -- agent calls ----------------------------------------------------------------

def test_agent_command_on_the_test_driver_is_unsupported(hv):
    with pytest.raises(AgentError) as info:
        hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    assert info.value.kind is ErrorKind.UNSUPPORTED
    assert info.value.code == libvirt.VIR_ERR_NO_SUPPORT
    agent = hv.agent(TEST_DOMAIN_UUID)
    assert agent.domain_uuid == TEST_DOMAIN_UUID
    with pytest.raises(AgentError) as info:
        agent.command("guest-ping", timeout=1)
    assert info.value.kind is ErrorKind.UNSUPPORTED


def test_agent_command_on_a_missing_domain(hv):
    with pytest.raises(AgentError) as info:
        hv.agent_command(str(uuidlib.uuid4()), "guest-ping")
    assert info.value.kind is ErrorKind.NO_DOMAIN


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


@pytest.fixture
def fake_agent(monkeypatch):
    fake = FakeAgent()
    monkeypatch.setattr(connection.libvirt_qemu, "qemuAgentCommand", fake)
    return fake


@pytest.mark.parametrize("timeout,seconds", [(2.0, 2), (2.5, 3), (1, 1), (0.2, 1), (0, 1),
                                             (-5, 1)])
def test_agent_command_passes_whole_seconds_of_at_least_one(hv, fake_agent, timeout, seconds):
    hv.agent_command(TEST_DOMAIN_UUID, "guest-ping", timeout=timeout)
    assert fake_agent.calls[-1][2] == seconds
    assert fake_agent.calls[-1][3] == 0


def test_agent_command_payload(hv, fake_agent):
    fake_agent.reply = '{"return": {"pid": 109}}'
    assert hv.agent_command(TEST_DOMAIN_UUID, "guest-exec",
                            {"path": "/bin/true", "capture-output": True}) == {"pid": 109}
    assert hv.agent_command(TEST_DOMAIN_UUID, "guest-ping") == {"pid": 109}
    payloads = [c[1] for c in fake_agent.calls]
    assert payloads == [
        '{"execute": "guest-exec", "arguments": {"path": "/bin/true", "capture-output": true}}',
        '{"execute": "guest-ping"}',
    ]
    assert fake_agent.calls[0][0] == TEST_DOMAIN_UUID


def test_agent_command_returns_recorded_guest_info(hv, fake_agent):
    commands = hv_recorded.load()["failures"]["blocked_shown_in_guest_info"]
    fake_agent.reply = '{"return": {"version": "7.2.22", "supported_commands": %s}}' % (
        __import__("json").dumps(commands))
    info = hv.agent(TEST_DOMAIN_UUID).command("guest-info")
    assert info["version"] == "7.2.22"
    assert {c["name"] for c in info["supported_commands"] if not c["enabled"]} == {
        "guest-get-devices", "guest-exec", "guest-file-open"}


@pytest.mark.parametrize("reply,kind", [
    ("{not json", ErrorKind.BAD_REPLY),
    ("[1, 2]", ErrorKind.BAD_REPLY),
    ('{"id": 1}', ErrorKind.BAD_REPLY),
    ('{"error": {"class": "GenericError", "desc": "nope"}}', ErrorKind.COMMAND_FAILED),
    ('{"return": "%s"}' % ("x" * 2000), ErrorKind.BAD_REPLY),  # over max_reply_bytes below
])
def test_agent_reply_problems(events, fake_agent, reply, kind):
    h = _start(events, max_reply_bytes=1024)
    try:
        assert h.wait_connected(5)
        fake_agent.reply = reply
        with pytest.raises(AgentError) as info:
            h.agent_command(TEST_DOMAIN_UUID, "guest-ping")
        assert info.value.kind is kind
        assert "\n" not in str(info.value)
        assert str(info.value).startswith(kind.value + ": guest-ping: ")
    finally:
        h.stop()


def test_reply_exactly_at_the_limit_is_accepted(events, fake_agent):
    h = _start(events, max_reply_bytes=1024)
    try:
        assert h.wait_connected(5)
        body = '{"return": "%s"}'
        fake_agent.reply = body % ("x" * (1024 - len(body) + 2))
        assert len(fake_agent.reply) == 1024
        assert h.agent_command(TEST_DOMAIN_UUID, "guest-ping") == "x" * (1024 - len(body) + 2)
    finally:
        h.stop()


RECORDED = list(hv_recorded.recorded_errors())


@pytest.mark.parametrize("case_id,code,domain,message", RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_libvirt_errors_become_agent_errors(hv, fake_agent, case_id, code, domain,
                                                     message):
    from masakarimonitors_iim.hypervisor.errors import classify

    fake_agent.error = hv_recorded.libvirt_error(code, domain, message)
    with pytest.raises(AgentError) as info:
        hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    assert info.value.kind is classify(code, domain, message)
    assert (info.value.code, info.value.domain) == (code, domain)
    assert "\n" not in str(info.value)


def test_prepare_agent_sets_libvirt_timeout(hv, monkeypatch):
    calls = []
    monkeypatch.setattr(libvirt.virDomain, "agentSetResponseTimeout",
                        lambda self, seconds, flags: calls.append((seconds, flags)) or 0)
    hv.prepare_agent(TEST_DOMAIN_UUID, 2.0)
    hv.prepare_agent(TEST_DOMAIN_UUID, 0.3)
    hv.prepare_agent(TEST_DOMAIN_UUID, 2.5)
    assert calls == [(2, 0), (1, 0), (3, 0)]


def test_prepare_agent_never_raises_and_warns_once(hv, domains, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    a, b = domains.make(), domains.make()
    hv.prepare_agent(a.UUIDString(), 2)   # test driver: unsupported
    hv.prepare_agent(b.UUIDString(), 2)
    hv.prepare_agent(a.UUIDString(), 2)
    hv.prepare_agent(str(uuidlib.uuid4()), 2)  # no such domain: quiet
    assert len(_messages(caplog, "cannot set the agent timeout")) == 1


def test_calls_without_a_connection_fail_at_once():
    h = Hypervisor(URI)
    with pytest.raises(HypervisorUnavailable):
        h.list_running_domains()
    with pytest.raises(HypervisorUnavailable):
        h.domain_state(TEST_DOMAIN_UUID)
    with pytest.raises(AgentError) as info:
        h.agent(TEST_DOMAIN_UUID).command("guest-ping")
    assert info.value.kind is ErrorKind.CONNECTION_LOST
    h.prepare_agent(TEST_DOMAIN_UUID, 2)


def _second_call_while_first_in_flight(h, fake, first_uuid, second_uuid):
    """Start a call to ``first_uuid`` that blocks inside libvirt, then make
    one to ``second_uuid`` with a 0.2 s timeout; returns its AgentError."""
    assert h.wait_connected(5)
    first = threading.Thread(target=h.agent_command, args=(first_uuid, "guest-ping"))
    first.start()
    assert fake.entered.wait(5)
    began = time.monotonic()
    with pytest.raises(AgentError) as info:
        h.agent_command(second_uuid, "guest-ping", timeout=0.2)
    assert info.value.kind is ErrorKind.AGENT_BUSY
    assert 0.15 < time.monotonic() - began < 1.0
    fake.gate.set()
    first.join(5)
    assert h.agent_command(second_uuid, "guest-ping") == {}
    return info.value


def test_agent_calls_in_flight_are_capped(events, domains, monkeypatch):
    """Calls to *different* domains beyond max_agent_calls wait for a slot."""
    fake = FakeAgent(gate=threading.Event())
    monkeypatch.setattr(connection.libvirt_qemu, "qemuAgentCommand", fake)
    other = domains.make().UUIDString()
    h = _start(events, max_agent_calls=1)
    try:
        error = _second_call_while_first_in_flight(h, fake, TEST_DOMAIN_UUID, other)
        assert "in flight on the libvirt connection" in str(error)
    finally:
        fake.gate.set()
        h.stop()


def test_one_agent_call_per_domain_at_a_time(events, monkeypatch):
    """A second call to a domain whose call is still in flight fails as
    AGENT_BUSY within its own timeout, even with free connection slots:
    libvirt would make it wait up to 30 s for the domain's agent job."""
    fake = FakeAgent(gate=threading.Event())
    monkeypatch.setattr(connection.libvirt_qemu, "qemuAgentCommand", fake)
    h = _start(events, max_agent_calls=4)
    try:
        error = _second_call_while_first_in_flight(h, fake, TEST_DOMAIN_UUID, TEST_DOMAIN_UUID)
        assert "this domain" in str(error)
    finally:
        fake.gate.set()
        h.stop()


# -- losing and regaining libvirtd --------------------------------------------------

class ConnProxy:
    """A real test:///default connection whose close callback and
    liveness the test controls (the test driver never loses either)."""

    def __init__(self, real: libvirt.virConnect) -> None:
        self._real = real
        self.close_callback = None
        self.alive = True
        self.closed = threading.Event()
        self.list_error: libvirt.libvirtError | None = None

    def registerCloseCallback(self, cb, opaque):
        self.close_callback = cb
        return self._real.registerCloseCallback(cb, opaque)

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


def _patch_open(monkeypatch, fake: FakeOpen) -> FakeOpen:
    monkeypatch.setattr(libvirt, "open", fake)
    return fake


def test_connect_retries_with_backoff_and_logs_once(events, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = _patch_open(monkeypatch, FakeOpen(failures=3))
    h = _start(events)
    try:
        assert h.wait_connected(5)
        assert fake.calls == 4
        assert len(_messages(caplog, "cannot connect to libvirt")) == 1
        assert len(_messages(caplog, "connected to libvirt", logging.INFO)) == 1
        assert events.queue.empty()  # a first connection is not a "restore"
    finally:
        h.stop()


def test_backoff_grows_to_the_maximum_with_jitter():
    h = Hypervisor(URI, reconnect_max_interval=30.0)
    first = [h._backoff(0) for _ in range(50)]
    late = [h._backoff(30) for _ in range(50)]
    assert all(0.25 <= d <= 0.5 for d in first)
    assert all(15.0 <= d <= 30.0 for d in late)
    assert len(set(late)) > 1


def test_close_callback_leads_to_reconnect(events, domains, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = _patch_open(monkeypatch, FakeOpen())
    h = _start(events)
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
        assert len(_messages(caplog, "lost connection")) == 1
        assert len(_messages(caplog, "reconnected", logging.INFO)) == 1
        # Callbacks were registered again, once.
        dom = domains.make(start=False)
        assert events.of(dom.UUIDString(), 1) == [(EventKind.DEFINED, "added")]
        assert events.drain(dom.UUIDString()) == []
        assert events.threads == {"libvirt-events"}
    finally:
        h.stop()


def test_dead_socket_is_noticed_without_a_close_callback(events, monkeypatch):
    fake = _patch_open(monkeypatch, FakeOpen())
    h = _start(events)
    try:
        assert h.wait_connected(5)
        fake.conns[0].alive = False
        assert "no longer alive" in events.kind(EventKind.CONNECTION_LOST).detail
        events.kind(EventKind.CONNECTION_RESTORED)
    finally:
        h.stop()


def test_transport_error_in_a_call_leads_to_reconnect(events, monkeypatch):
    fake = _patch_open(monkeypatch, FakeOpen())
    agent = FakeAgent(error=hv_recorded.libvirt_error(*hv_recorded.SOCKET_CLOSED))
    monkeypatch.setattr(connection.libvirt_qemu, "qemuAgentCommand", agent)
    h = _start(events)
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
    _patch_open(monkeypatch, FakeOpen(failures=10 ** 6))
    h = _start(events)
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
        h.prepare_agent(TEST_DOMAIN_UUID, 2)
        assert time.monotonic() - began < 0.1
    finally:
        began = time.monotonic()
        h.stop()
        assert time.monotonic() - began < 1.0


def test_reconnect_waits_for_calls_still_using_the_old_connection(events, monkeypatch):
    fake = _patch_open(monkeypatch, FakeOpen())
    gate = threading.Event()
    agent = FakeAgent(gate=gate, error=hv_recorded.libvirt_error(*hv_recorded.SOCKET_CLOSED))
    monkeypatch.setattr(connection.libvirt_qemu, "qemuAgentCommand", agent)
    h = _start(events)
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
    fake = _patch_open(monkeypatch, FakeOpen(gate=gate))
    h = _start(events)
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
