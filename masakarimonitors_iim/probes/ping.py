"""guest-ping: the agent answers, so the guest kernel still schedules it."""
from __future__ import annotations

from typing import Any, Mapping

from masakarimonitors_iim.hypervisor.types import AgentChannel
from masakarimonitors_iim.probes.base import Probe, ProbeConfigError
from masakarimonitors_iim.verdict import ProbeResult


class PingProbe(Probe):
    name = "ping"

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        if self.params:
            raise ProbeConfigError(
                "probe 'ping' takes no parameters, got %s: remove them"
                % ", ".join(sorted(self.params)))

    def required_commands(self) -> set[str]:
        return {"guest-ping"}

    def run(self, agent: AgentChannel, timeout: float) -> ProbeResult:
        # Any agent failure raises AgentError; the caller maps it to a
        # verdict with the domain state in hand.
        agent.command("guest-ping", None, timeout)
        return ProbeResult.healthy()
