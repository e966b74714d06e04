"""The calls the monitor makes (hypervisor.calls) against libvirt's test driver.

Inventory, domain state, agent commands, and the agent response timeouts
the Hypervisor keeps set across restarts. See hv_libvirt for how the test
driver is used.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
import uuid as uuidlib

import hv_recorded
import libvirt
import pytest
from hv_libvirt import (
    LOGGER,
    TEST_DOMAIN_UUID,
    URI,
    Events,
    FakeAgent,
    FakeOpen,
    messages,
    patch_open,
    start,
)

from masakarimonitors_iim.hypervisor import calls, listing, timeouts
from masakarimonitors_iim.hypervisor.calls import Hypervisor
from masakarimonitors_iim.hypervisor.types import (
    AgentError,
    DomainState,
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
)


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
    real_parse = listing.parse_domain_xml

    def parse(xml):
        if broken["on"] and dom.name() in xml:
            raise ValueError("domain XML is malformed: simulated")
        return real_parse(xml)

    monkeypatch.setattr(listing, "parse_domain_xml", parse)
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def listed():
        return next(i for i in hv.list_running_domains() if i.uuid == dom.UUIDString())

    assert not listed().has_agent
    assert not listed().has_agent
    assert len(messages(caplog, "is not monitored")) == 1
    broken["on"] = False
    assert listed().has_agent
    # Parsed well: cached until libvirt says the domain changed.
    broken["on"] = True
    assert listed().has_agent
    hv._inventory.changed(dom.UUIDString())
    assert not listed().has_agent
    assert len(messages(caplog, "is not monitored")) == 2


def test_one_unreadable_domain_does_not_hide_the_others(hv, domains, monkeypatch, caplog):
    good, odd, gone = domains.make(), domains.make(), domains.make()
    errors_by_name = {
        odd.name(): (9, 10, "operation failed: simulated"),
        gone.name(): hv_recorded.TEST_DRIVER_NO_DOMAIN,
    }
    real_xml = libvirt.virDomain.XMLDesc

    def xml_desc(self, flags=0):
        if self.name() in errors_by_name:
            raise hv_recorded.libvirt_error(*errors_by_name[self.name()])
        return real_xml(self, flags)

    monkeypatch.setattr(libvirt.virDomain, "XMLDesc", xml_desc)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(2):
        listed = {i.uuid for i in hv.list_running_domains()}
        assert good.UUIDString() in listed
        assert odd.UUIDString() not in listed and gone.UUIDString() not in listed
    warnings = messages(caplog, "is not monitored")
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
    h = start(events, max_reply_bytes=1024)
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
    h = start(events, max_reply_bytes=1024)
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


def test_calls_without_a_connection_fail_at_once():
    h = Hypervisor(URI)
    with pytest.raises(HypervisorUnavailable):
        h.list_running_domains()
    with pytest.raises(HypervisorUnavailable):
        h.domain_state(TEST_DOMAIN_UUID)
    with pytest.raises(AgentError) as info:
        h.agent(TEST_DOMAIN_UUID).command("guest-ping")
    assert info.value.kind is ErrorKind.CONNECTION_LOST
    h.set_agent_timeout(TEST_DOMAIN_UUID, 2)


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
    monkeypatch.setattr(calls.libvirt_qemu, "qemuAgentCommand", fake)
    other = domains.make().UUIDString()
    h = start(events, max_agent_calls=1)
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
    monkeypatch.setattr(calls.libvirt_qemu, "qemuAgentCommand", fake)
    h = start(events, max_agent_calls=4)
    try:
        error = _second_call_while_first_in_flight(h, fake, TEST_DOMAIN_UUID, TEST_DOMAIN_UUID)
        assert "this domain" in str(error)
    finally:
        fake.gate.set()
        h.stop()


@pytest.mark.parametrize("desc,kind", [
    ("Command guest-exec has been disabled", ErrorKind.COMMAND_DISABLED),
    ("The command guest-foo has not been found", ErrorKind.COMMAND_NOT_FOUND),
])
def test_agent_error_replies_use_the_same_wording_rules(hv, fake_agent, desc, kind):
    fake_agent.reply = '{"error": {"class": "GenericError", "desc": "%s"}}' % desc
    with pytest.raises(AgentError) as info:
        hv.agent_command(TEST_DOMAIN_UUID, "guest-exec")
    assert info.value.kind is kind


# -- agent response timeouts -------------------------------------------------------
# A healthy domain keeps libvirt's default; the wanted value is set while
# the agent times out and the default given back when it answers.

#: libvirt's initial value for a domain (blocking), restored after suspicion.
DEFAULT = libvirt.VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK
TIMED_OUT = hv_recorded.libvirt_error(
    86, 10, "Guest agent is not responding: Guest agent not available for now")


@pytest.mark.parametrize("wanted,suspect,expected", [
    (None, False, DEFAULT),
    (None, True, DEFAULT),       # nothing wanted: never shortened
    (2.0, False, DEFAULT),       # healthy: no trace on the domain
    (2.0, True, 2),
    (0.3, True, 1),              # whole seconds, at least 1
    (2.5, True, 3),
])
def test_timeout_target(wanted, suspect, expected):
    assert timeouts.target(wanted, suspect) == expected


class TimeoutSetter:
    """Stands in for virDomain.agentSetResponseTimeout (the test driver
    does not support it) and notes who set what, in order."""

    def __init__(self, order: list | None = None) -> None:
        self.order = [] if order is None else order
        self.seen: queue.Queue[tuple[str, int, str]] = queue.Queue()

    def __call__(self, dom, seconds, flags):
        call = (dom.UUIDString(), seconds, threading.current_thread().name)
        self.order.append(("set",) + call[:2])
        self.seen.put(call)
        return 0

    def next(self, timeout: float = 5.0) -> tuple[str, int, str]:
        return self.seen.get(timeout=timeout)

    def quiet(self, settle: float = 0.3) -> bool:
        time.sleep(settle)
        return self.seen.empty()


@pytest.fixture
def setter(monkeypatch) -> TimeoutSetter:
    fake = TimeoutSetter()
    monkeypatch.setattr(libvirt.virDomain, "agentSetResponseTimeout",
                        lambda dom, seconds, flags: fake(dom, seconds, flags))
    return fake


def _wait_in_force(h, uuid, expected, timeout=5.0):
    deadline = time.monotonic() + timeout
    while h.agent_timeout_in_force(uuid) != expected:
        assert time.monotonic() < deadline, h.agent_timeout_in_force(uuid)
        time.sleep(0.01)


def test_healthy_domain_keeps_libvirt_default(hv, fake_agent, setter):
    hv.set_agent_timeout(TEST_DOMAIN_UUID, 2.0)
    assert hv.agent_command(TEST_DOMAIN_UUID, "guest-ping") == {}
    assert setter.quiet()
    assert hv.agent_timeout_in_force(TEST_DOMAIN_UUID) is None


@pytest.mark.parametrize("wanted,seconds", [(2.0, 2), (0.3, 1), (2.5, 3)])
def test_timeout_is_set_while_suspect_and_default_restored_on_answer(hv, fake_agent, setter,
                                                                   wanted, seconds):
    hv.set_agent_timeout(TEST_DOMAIN_UUID, wanted)
    fake_agent.error = TIMED_OUT
    for _ in range(3):   # set once, not per failed call
        with pytest.raises(AgentError):
            hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    assert setter.next()[:2] == (TEST_DOMAIN_UUID, seconds)
    _wait_in_force(hv, TEST_DOMAIN_UUID, float(seconds))
    assert setter.quiet()

    fake_agent.error = None
    hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    assert setter.next()[:2] == (TEST_DOMAIN_UUID, DEFAULT)
    _wait_in_force(hv, TEST_DOMAIN_UUID, None)
    assert setter.quiet()


def test_an_error_reply_is_an_answer(hv, fake_agent, setter):
    hv.set_agent_timeout(TEST_DOMAIN_UUID, 2)
    fake_agent.error = TIMED_OUT
    with pytest.raises(AgentError):
        hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    assert setter.next()[1] == 2
    fake_agent.error = None
    fake_agent.reply = ('{"error": {"class": "GenericError", '
                        '"desc": "Command guest-exec has been disabled"}}')
    with pytest.raises(AgentError):
        hv.agent_command(TEST_DOMAIN_UUID, "guest-exec")
    assert setter.next()[1] == DEFAULT


def test_timeout_without_a_wanted_value_sets_nothing(hv, fake_agent, setter):
    fake_agent.error = TIMED_OUT
    with pytest.raises(AgentError):
        hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    assert setter.quiet()


def test_forget_restores_the_default(hv, fake_agent, setter):
    hv.set_agent_timeout(TEST_DOMAIN_UUID, 2)
    fake_agent.error = TIMED_OUT
    with pytest.raises(AgentError):
        hv.agent_command(TEST_DOMAIN_UUID, "guest-ping")
    assert setter.next()[1] == 2
    _wait_in_force(hv, TEST_DOMAIN_UUID, 2.0)
    hv.forget_domain(TEST_DOMAIN_UUID)
    assert setter.next()[1] == DEFAULT
    _wait_in_force(hv, TEST_DOMAIN_UUID, None)


def test_setting_the_timeout_never_raises_and_warns_once(hv, events, domains, fake_agent,
                                                         caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    fake_agent.error = TIMED_OUT
    a, b = domains.make().UUIDString(), domains.make().UUIDString()
    for uuid in (a, b):
        events.of(uuid, 2)   # defined, started: a start clears suspicion
    for uuid in (a, b, str(uuidlib.uuid4())):   # test driver: unsupported; no such domain
        hv.set_agent_timeout(uuid, 2)
        with pytest.raises(AgentError):
            hv.agent_command(uuid, "guest-ping")
    deadline = time.monotonic() + 5
    while not messages(caplog, "cannot set the agent timeout") and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(messages(caplog, "cannot set the agent timeout")) == 1
    assert hv.agent_timeout_in_force(a) is None


def _suspect(h, fake_agent, uuid, setter, seconds):
    h.set_agent_timeout(uuid, seconds)
    fake_agent.error = TIMED_OUT
    with pytest.raises(AgentError):
        h.agent_command(uuid, "guest-ping")
    fake_agent.error = None
    assert setter.next()[:2] == (uuid, math.ceil(seconds))


def test_agent_timeouts_are_set_again_after_a_reconnect(domains, setter, fake_agent,
                                                        monkeypatch):
    fake = patch_open(monkeypatch, FakeOpen())
    events = Events()

    def consumer(event):
        if event.kind is EventKind.CONNECTION_RESTORED:
            setter.order.append(("event", event.kind))
        events(event)

    h = start(consumer)
    try:
        assert h.wait_connected(5)
        kept, forgotten, healthy = domains.make(), domains.make(), domains.make()
        for dom in (kept, forgotten, healthy):
            events.of(dom.UUIDString(), 2)  # defined, started: nothing to set again
        h.set_agent_timeout(healthy.UUIDString(), 2)
        _suspect(h, fake_agent, kept.UUIDString(), setter, 2.5)
        _suspect(h, fake_agent, forgotten.UUIDString(), setter, 2)
        h.forget_domain(forgotten.UUIDString())
        assert setter.next()[:2] == (forgotten.UUIDString(), DEFAULT)
        assert setter.quiet()
        del setter.order[:]

        fake.conns[0].lose()
        events.kind(EventKind.CONNECTION_RESTORED)
        # Set on the bookkeeping thread, not by the connector before it
        # announces the reconnect (one RPC per domain must not delay it).
        again = setter.next()
        assert again == (kept.UUIDString(), 3, "libvirt-agent-timeouts")
        assert setter.quiet()   # neither the forgotten nor the healthy domain
    finally:
        h.stop()


def test_agent_timeout_wanted_while_disconnected_costs_nothing(setter, monkeypatch):
    gate = threading.Event()
    patch_open(monkeypatch, FakeOpen(gate=gate))
    h = start()
    try:
        h.set_agent_timeout(TEST_DOMAIN_UUID, 2)  # not connected: remembered only
        gate.set()
        assert h.wait_connected(5)
        assert setter.quiet()
        assert setter.order == []
    finally:
        gate.set()
        h.stop()


def test_agent_timeout_after_the_domain_starts_or_reboots(domains, setter, fake_agent,
                                                         monkeypatch):
    """A new QEMU process has a new agent: the default, set explicitly
    since the monitor had set something. A guest reboot may or may not
    replace the process: what was in force is set again."""
    fake = patch_open(monkeypatch, FakeOpen())
    events = Events()
    h = start(events)
    try:
        assert h.wait_connected(5)
        dom = domains.make()
        uuid = dom.UUIDString()
        events.of(uuid, 2)
        _suspect(h, fake_agent, uuid, setter, 2)

        dom.destroy()
        dom.create()
        assert events.of(uuid, 2) == [(EventKind.STOPPED, "destroyed"),
                                      (EventKind.STARTED, "booted")]
        again = setter.next()
        assert again[:2] == (uuid, DEFAULT) and again[2] != "libvirt-events"
        _wait_in_force(h, uuid, None)

        _suspect(h, fake_agent, uuid, setter, 2)
        fake.conns[0].fire(libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, dom)
        assert events.of(uuid, 1) == [(EventKind.REBOOTED, "")]
        assert setter.next()[:2] == (uuid, 2)

        h.forget_domain(uuid)
        assert setter.next()[:2] == (uuid, DEFAULT)
        dom.destroy()
        dom.create()
        assert [kind for kind, _ in events.of(uuid, 2)] == [EventKind.STOPPED,
                                                           EventKind.STARTED]
        fake.conns[0].fire(libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, dom)
        assert events.of(uuid, 1) == [(EventKind.REBOOTED, "")]
        assert setter.quiet()
    finally:
        h.stop()


# -- oversized guest-exec-status replies (issue 8) ------------------------------

def _exec_status_reply(code: int = 0, out: bytes = b"OK\n", err: bytes = b"",
                       **extra) -> str:
    import base64
    import json

    status = {"exited": True, "exitcode": code, **extra}
    if out:
        status["out-data"] = base64.b64encode(out).decode()
    if err:
        status["err-data"] = base64.b64encode(err).decode()
    return json.dumps({"return": status})


@pytest.mark.parametrize("code", [0, 1, 255])
def test_oversized_exec_status_keeps_its_exit_code(events, fake_agent, code):
    """qemu-ga forgets the command once it reported the exit: a reply too
    big to parse whole is still read, exit code intact, streams capped."""
    import base64

    h = start(events, max_reply_bytes=1024)
    try:
        assert h.wait_connected(5)
        fake_agent.reply = _exec_status_reply(code, err=b"x" * 900_000)
        assert len(fake_agent.reply) > 1_000_000
        status = h.agent_command(TEST_DOMAIN_UUID, "guest-exec-status", {"pid": 5})
        assert status["exitcode"] == code and status["exited"] is True
        assert base64.b64decode(status["out-data"]) == b"OK\n"
        assert "out-truncated" not in status
        assert status["err-truncated"] is True
        kept = base64.b64decode(status["err-data"], validate=True)
        assert kept == b"x" * len(kept) and 1024 <= len(kept) < 1027
    finally:
        h.stop()


def test_oversized_reply_to_other_commands_is_still_refused(events, fake_agent):
    h = start(events, max_reply_bytes=1024)
    try:
        assert h.wait_connected(5)
        fake_agent.reply = _exec_status_reply(err=b"x" * 5000)
        with pytest.raises(AgentError) as info:
            h.agent_command(TEST_DOMAIN_UUID, "guest-file-read", {"handle": 1})
        assert info.value.kind is ErrorKind.BAD_REPLY and "limit" in str(info.value)
    finally:
        h.stop()


_PAD = " " * 2000   # over the 1000-byte limit used below


@pytest.mark.parametrize("reply,expected", [
    # member order and whitespace are libvirt's business, not ours
    ('{ "return" : { "out-data" : "T0sK" , "exitcode" : 0 , "exited" : true } }' + _PAD,
     {"out-data": "T0sK", "exitcode": 0, "exited": True}),
    ('{"return": {"exited": true, "signal": 9, "out-truncated": false}}' + _PAD,
     {"exited": True, "signal": 9, "out-truncated": False}),
    ('{"return": {"exited": false}}' + _PAD, {"exited": False}),
    ('{"return": {}}' + _PAD, {}),
    # an escaped "/" (some JSON writers do that) is read as "/"
    ('{"return": {"exitcode": 0, "out-data": "Lw\\/v"}}' + _PAD,
     {"exitcode": 0, "out-data": "Lw/v"}),
])
def test_bounded_exec_status_reads(reply, expected):
    from masakarimonitors_iim.hypervisor import bounded_reply

    assert bounded_reply.parse_agent_reply("guest-exec-status", reply, 1000) == expected


@pytest.mark.parametrize("reply", [
    '{"return": [1, 2]}' + _PAD,
    '{"error": {"desc": "x"}}' + _PAD,
    '{"return": {"exitcode": 0.5}}' + _PAD,
    '{"return": {"exitcode": 01x}}' + _PAD,
    '{"return": {"out-data": {"nested": 1}}}' + _PAD,
    '{"return": {"out-data": "' + "A" * 3000,                # unterminated
    '{"return": {"exited": true}} trailing' + _PAD,
    '{"return": {"exited": true,}}' + _PAD,
    '{"return": {"' + "k" * 100 + '": 1}}' + _PAD,
    '{"return": {"exited": true}' + _PAD,
])
def test_bounded_exec_status_refuses_what_is_not_a_status(reply):
    from masakarimonitors_iim.hypervisor import bounded_reply

    with pytest.raises(AgentError) as info:
        bounded_reply.parse_agent_reply("guest-exec-status", reply, 1000)
    assert info.value.kind is ErrorKind.BAD_REPLY
    assert "over the size limit" in str(info.value) and len(str(info.value)) < 300


def test_bounded_exec_status_keeps_whole_base64_groups_and_never_splits_escapes():
    import base64
    import json

    from masakarimonitors_iim.hypervisor import bounded_reply

    data = bytes(range(256)) * 2000   # base64 with many "/"
    reply = json.dumps({"return": {"exitcode": 0, "exited": True,
                                   "out-data": base64.b64encode(data).decode()}})
    for text in (reply, reply.replace("/", "\\/")):
        for keep in (1, 2, 3, 100, 1000, 4097):
            status = bounded_reply.exec_status(text, keep)
            assert status["out-truncated"] is True
            kept = base64.b64decode(status["out-data"], validate=True)
            assert data.startswith(kept) and keep <= len(kept) < keep + 3


def test_bounded_exec_status_scans_16_mib_quickly_and_keeps_little():
    from masakarimonitors_iim.hypervisor import bounded_reply

    reply = '{"return": {"exitcode": 0, "err-data": "%s", "exited": true}}' % ("A" * (16 << 20))
    started = time.monotonic()
    status = bounded_reply.exec_status(reply, 1 << 20)
    assert time.monotonic() - started < 2.0
    assert len(status["err-data"]) == 4 * ((1 << 20) + 2) // 3 // 4 * 4
    assert status["exitcode"] == 0 and status["err-truncated"] is True
