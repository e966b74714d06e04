"""The prober: one round from a frozen spec."""
from __future__ import annotations

from typing import Any

from masakarimonitors_iim.hypervisor.types import AgentChannel
from masakarimonitors_iim.prober import Prober, RoundSpec
from masakarimonitors_iim.probes.base import Probe
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
