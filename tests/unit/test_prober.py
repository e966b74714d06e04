"""The prober: one round from a frozen spec."""
from __future__ import annotations

from typing import Any

import pytest

from masakarimonitors_iim.hypervisor.types import Activity, AgentChannel, AgentError, ErrorKind
from masakarimonitors_iim.prober import Prober, RoundSpec
from masakarimonitors_iim.probes.base import Probe
from masakarimonitors_iim.probes.exec import ExecProbe
from masakarimonitors_iim.probes.ping import PingProbe
from masakarimonitors_iim.verdict import ProbeResult, Verdict
from tests.unit.fakes import FakeHypervisor

A = "11111111-1111-1111-1111-111111111111"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class SlowProbe(Probe):
    """Takes ``cost`` seconds of the clock and says HEALTHY if it had the
    ``need`` seconds it needs."""

    def __init__(self, name: str, clock: Clock, cost: float, need: float) -> None:
        super().__init__({})
        self.name = name
        self.clock, self.cost, self.need = clock, cost, need
        self.given: list[float] = []

    def run(self, agent: AgentChannel, timeout: float) -> ProbeResult:
        self.given.append(timeout)
        self.clock.t += self.cost
        if timeout < self.need:
            return ProbeResult.failed("%s ran out of time" % self.name)
        return ProbeResult.healthy()


def test_each_probe_has_the_whole_timeout_to_itself() -> None:
    clock = Clock()
    hv: Any = FakeHypervisor()
    ping = SlowProbe("ping", clock, cost=1.5, need=0.0)     # a slow agent
    # a healthy 0.9 s check, which needs its time plus the kill reserve
    check = SlowProbe("exec", clock, cost=0.9, need=1.2)
    spec = RoundSpec(uuid=A, name="vm-a", probes=(ping, check), timeout=2.0)
    outcome = Prober(hv, clock).run(spec)
    assert outcome.result.verdict is Verdict.HEALTHY
    assert (ping.given, check.given) == ([2.0], [2.0])
    assert [(r.name, r.result.verdict, round(r.seconds, 6)) for r in outcome.probes] == [
        ("ping", Verdict.HEALTHY, 1.5), ("exec", Verdict.HEALTHY, 0.9)]


def test_a_blocked_probe_is_skipped_with_its_reason() -> None:
    clock = Clock()
    hv: Any = FakeHypervisor()
    check = SlowProbe("exec", clock, cost=0.1, need=0.0)
    blocked = {"exec": ProbeResult.unknown("guest-exec disabled")}
    spec = RoundSpec(uuid=A, name="vm-a", probes=(check,), timeout=2.0, blocked=blocked)
    outcome = Prober(hv, clock).run(spec)
    assert check.given == []
    assert outcome.probes[0].skipped and outcome.result.verdict is Verdict.UNKNOWN


# -- agent-only failures and the activity sample ---------------------------

class Scripted(FakeHypervisor):
    """Each agent command answers from ``replies``: a value, or an
    ErrorKind to raise. Commands not listed answer {}."""

    def __init__(self, replies: dict[str, Any]) -> None:
        super().__init__()
        self.replies = replies
        self.add(A, "vm-a")

    def agent(self, uuid: str) -> AgentChannel:
        hv = self

        class Agent:
            domain_uuid = uuid

            def command(self, name: str, arguments: Any = None, timeout: float = 2.0) -> Any:
                hv.calls.append((uuid, name))
                reply = hv.replies.get(name, {})
                if isinstance(reply, ErrorKind):
                    message = ("The command %s has been disabled for this instance" % name
                               if reply is ErrorKind.COMMAND_DISABLED else "fake")
                    raise AgentError(reply, message)
                return reply
        return Agent()

    def names(self) -> list[str]:
        return [name for _uuid, name in self.calls]


def probes(*names: str) -> tuple[Probe, ...]:
    made: list[Probe] = []
    for name in names:
        if name == "ping":
            made.append(PingProbe({}))
        elif name == "exec":
            p = ExecProbe({"command": ["/bin/true"], "timeout": 1})
            p._sleep = lambda s: None
            made.append(p)
        else:
            made.append(AppFails(name))
    return tuple(made)


class AppFails(Probe):
    """An application probe whose check ran and failed."""

    def __init__(self, name: str) -> None:
        super().__init__({})
        self.name = name

    def run(self, agent: AgentChannel, timeout: float) -> ProbeResult:
        return ProbeResult.failed("application check failed")


TIMEOUT, ABSENT, BAD = ErrorKind.AGENT_TIMEOUT, ErrorKind.AGENT_NOT_CONNECTED, ErrorKind.BAD_REPLY
EXITED_0 = {"exited": True, "exitcode": 0}


@pytest.mark.parametrize("names, replies, discover, verdict, agent_only", [
    # the agent does not answer at all: agent-only
    (("ping",), {"guest-ping": TIMEOUT}, False, Verdict.FAILED, True),
    (("ping",), {"guest-ping": ABSENT}, False, Verdict.FAILED, True),
    (("ping",), {"guest-info": TIMEOUT}, True, Verdict.FAILED, True),
    (("ping", "exec"), {"guest-ping": TIMEOUT, "guest-exec": TIMEOUT}, False,
     Verdict.FAILED, True),
    # an answer that cannot be read is not silence
    (("ping",), {"guest-ping": BAD}, False, Verdict.FAILED, False),
    # an application probe failed: never agent-only, even with ping silent
    (("ping", "app"), {"guest-ping": TIMEOUT}, False, Verdict.FAILED, False),
    (("ping", "app"), {}, False, Verdict.FAILED, False),
    # healthy and unknown rounds are never agent-only
    (("ping",), {}, False, Verdict.HEALTHY, False),
    (("ping",), {"guest-ping": ErrorKind.CONNECTION_LOST}, False, Verdict.UNKNOWN, False),
])
def test_agent_only_and_activity_sample(names, replies, discover, verdict, agent_only):
    hv = Scripted(replies)
    hv.activity[A] = Activity(cpu_ns=1, block_bytes=2, net_bytes=3, at=4.0)
    spec = RoundSpec(uuid=A, name="vm-a", probes=probes(*names), timeout=2.0,
                     check_capabilities=discover)
    outcome = Prober(hv, Clock()).run(spec)
    assert outcome.result.verdict is verdict
    assert outcome.result.agent_only is agent_only
    # the counters are read on agent-only rounds only, once
    assert hv.activity_calls == ([A] if agent_only else [])
    assert outcome.activity == (hv.activity[A] if agent_only else None)


def test_no_sample_when_the_policy_does_not_corroborate():
    hv = Scripted({"guest-ping": TIMEOUT})
    spec = RoundSpec(uuid=A, name="vm-a", probes=probes("ping"), timeout=2.0,
                     corroborate=False)
    outcome = Prober(hv, Clock()).run(spec)
    assert outcome.result.agent_only and outcome.activity is None
    assert hv.activity_calls == []


def test_a_failed_sample_leaves_the_verdict_alone():
    hv = Scripted({"guest-ping": TIMEOUT})
    hv.up = True
    hv.domains.clear()          # domain_activity: NO_DOMAIN
    spec = RoundSpec(uuid=A, name="vm-a", probes=probes("ping"), timeout=2.0)
    outcome = Prober(hv, Clock()).run(spec)
    assert outcome.result.verdict is Verdict.FAILED and outcome.activity is None


def test_startup_grace_is_not_agent_only():
    clock = Clock()
    hv = Scripted({"guest-ping": TIMEOUT})
    spec = RoundSpec(uuid=A, name="vm-a", probes=probes("ping"), timeout=2.0,
                     startup_grace_until=clock.t + 60)
    outcome = Prober(hv, clock).run(spec)
    assert outcome.result.verdict is Verdict.UNKNOWN and not outcome.result.agent_only
    assert hv.activity_calls == []


# -- filesystems frozen (fsfreeze) -----------------------------------------

DISABLED = ErrorKind.COMMAND_DISABLED
ALL_ENABLED = {"version": "8.2", "supported_commands": [
    {"name": n, "enabled": True} for n in ("guest-ping", "guest-exec", "guest-exec-status")]}
#: what qemu-ga lists while frozen: everything but a handful disabled
WHILE_FROZEN = {"version": "8.2", "supported_commands": [
    {"name": "guest-ping", "enabled": True},
    {"name": "guest-exec", "enabled": False},
    {"name": "guest-exec-status", "enabled": False}]}


@pytest.mark.parametrize("discover, info, exec_reply, status, verdict, frozen, blocked", [
    # frozen while the probes run: every probe UNKNOWN, nothing cached
    (False, ALL_ENABLED, DISABLED, "frozen", Verdict.UNKNOWN, True, None),
    # discovery during a freeze: not taken for a qemu-ga block
    (True, WHILE_FROZEN, DISABLED, "frozen", Verdict.UNKNOWN, True, None),
    # the same guest-info while thawed: a real block, cached
    (True, WHILE_FROZEN, DISABLED, "thawed", Verdict.HEALTHY, False, {"exec"}),
    # fsfreeze-status itself blocked: not evidence of a freeze
    (True, WHILE_FROZEN, DISABLED, DISABLED, Verdict.HEALTHY, False, {"exec"}),
    (False, ALL_ENABLED, DISABLED, "thawed", Verdict.HEALTHY, False, None),
    # a healthy round never asks
    (False, ALL_ENABLED, {"pid": 7}, "frozen", Verdict.HEALTHY, False, None),
    (True, ALL_ENABLED, {"pid": 7}, "frozen", Verdict.HEALTHY, False, set()),
])
def test_frozen_filesystems(discover, info, exec_reply, status, verdict, frozen, blocked):
    hv = Scripted({"guest-info": info, "guest-exec": exec_reply,
                   "guest-exec-status": EXITED_0, "guest-fsfreeze-status": status})
    spec = RoundSpec(uuid=A, name="vm-a", probes=probes("ping", "exec"), timeout=2.0,
                     check_capabilities=discover)
    outcome = Prober(hv, Clock(), wall=lambda: 1000.0).run(spec)
    assert outcome.result.verdict is verdict
    assert outcome.frozen is frozen
    assert (None if outcome.blocked is None else set(outcome.blocked)) == blocked
    asked = hv.names().count("guest-fsfreeze-status")
    refused = exec_reply is DISABLED or info is WHILE_FROZEN
    assert asked == (1 if refused else 0)
    if frozen:
        assert outcome.result.reason.startswith("guest filesystems are frozen (fsfreeze) since")
        assert [(r.name, r.result.verdict) for r in outcome.probes] == [
            ("ping", Verdict.UNKNOWN), ("exec", Verdict.UNKNOWN)]
        assert "qemu-ga" not in outcome.result.reason.split("thawed")[0]


def test_a_freeze_that_never_thaws_says_so():
    hv = Scripted({"guest-exec": DISABLED, "guest-fsfreeze-status": "frozen"})
    spec = RoundSpec(uuid=A, name="vm-a", probes=probes("ping", "exec"), timeout=2.0,
                     frozen_since=1000.0)
    young = Prober(hv, Clock(), wall=lambda: 1000.0 + 42).run(spec).result.reason
    old = Prober(hv, Clock(), wall=lambda: 1000.0 + 601).run(spec).result.reason
    assert "since 1970-01-01 00:16:40 UTC: probes" in young and "never thawed" not in young
    assert "since 1970-01-01 00:16:40 UTC, more than 600 s, never thawed" in old


def test_a_frozen_ping_only_guest_costs_nothing_extra():
    """guest-ping works while frozen: a ping-only round never asks."""
    hv = Scripted({"guest-fsfreeze-status": "frozen"})
    spec = RoundSpec(uuid=A, name="vm-a", probes=probes("ping"), timeout=2.0)
    outcome = Prober(hv, Clock()).run(spec)
    assert outcome.result.verdict is Verdict.HEALTHY and hv.names() == ["guest-ping"]


@pytest.mark.parametrize("quick, behaviour, recheck, timeouts, seconds", [
    # healthy lane, hung since the last round: cut at 1 s, nothing judged
    (True, ErrorKind.AGENT_TIMEOUT, True, [1.0], None),
    # the same without the quick call: judged FAILED on the full timeout
    (False, ErrorKind.AGENT_TIMEOUT, False, [2.0], None),
    # answered: timed, for the next round's choice
    (True, "ok", False, [1.0], 0.0),
])
def test_a_quick_first_call(quick, behaviour, recheck, timeouts, seconds) -> None:
    hv: Any = FakeHypervisor()
    hv.add(A, "vm-a")
    hv.behaviour[A] = behaviour
    states = []
    read_state = hv.domain_state
    hv.domain_state = lambda uuid: states.append(uuid) or read_state(uuid)
    spec = RoundSpec(uuid=A, name="vm-a", probes=(PingProbe({}),), timeout=2.0, quick=quick)
    outcome = Prober(hv, Clock()).run(spec)
    assert outcome.recheck is recheck
    assert [t for _, _, t in hv.call_timeouts] == timeouts
    assert outcome.first_answer_seconds == seconds
    if recheck:
        # no verdict, and no libvirt call beyond the cut one (no state
        # read, no counters): the re-probe does that
        assert outcome.result.verdict is Verdict.UNKNOWN
        assert hv.activity_calls == [] and states == []
        assert hv.calls == [(A, "guest-ping")]
    else:
        assert outcome.result.verdict is (
            Verdict.HEALTHY if behaviour == "ok" else Verdict.FAILED)
