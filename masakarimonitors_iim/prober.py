"""Run one probe round for one domain and say what it showed.

The prober sits between the scheduler and the probes, the way kubelet's
prober sits between its workers and its results manager: it is given a
frozen description of the round (:class:`RoundSpec`), runs it on a
worker thread, and returns a verdict plus what it learnt
(:class:`RoundOutcome`). It reads nothing the scheduler may change while
the round runs and writes nothing shared; the scheduler applies the
outcome on its own thread. Deciding HEALTHY / FAILED / UNKNOWN from a
failed agent call happens here (with :func:`verdict.verdict_for`), not in
the hypervisor layer, which only reports what happened.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping

from oslo_log import log as logging

from masakarimonitors_iim import verdict as verdict_mod
from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import (
    AgentError, DomainState, ErrorKind, HypervisorUnavailable)
from masakarimonitors_iim.probes import capabilities
from masakarimonitors_iim.probes.base import Probe
from masakarimonitors_iim.verdict import ProbeResult, Verdict

LOG = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class RoundSpec:
    """Everything one round needs, fixed when the round is scheduled.

    The probe objects are the domain's own (they remember a pending exec
    or a heartbeat's last value); the scheduler never runs two rounds of
    one domain at once, so a round owns them while it runs.
    """

    uuid: str
    name: str
    probes: tuple[Probe, ...]
    timeout: float
    #: read guest-info first, to learn which probes the guest blocks
    check_capabilities: bool = False
    #: probe name -> the UNKNOWN result it gives instead of running
    blocked: Mapping[str, ProbeResult] = dataclasses.field(default_factory=dict)
    #: why the probes could not be built; the round is UNKNOWN with it
    probe_error: str = ""
    #: monotonic times before which a FAILED is not counted
    startup_grace_until: float = 0.0
    disconnect_grace_until: float = 0.0
    #: the configured disconnect grace, for the reason text
    disconnect_grace: float = 0.0


@dataclasses.dataclass(frozen=True)
class ProbeRun:
    """One probe's part of a round: for status (each probe's last verdict)
    and metrics (latency by probe type)."""

    name: str
    result: ProbeResult
    seconds: float
    #: the probe did not run: the guest blocks an RPC it needs
    skipped: bool = False


@dataclasses.dataclass(frozen=True)
class RoundOutcome:
    """A round's verdict, plus what the scheduler should remember."""

    result: ProbeResult
    #: the agent answered: a disconnect grace in force can end
    agent_answered: bool = False
    #: set when this round read guest-info: probe name -> UNKNOWN result
    blocked: Mapping[str, ProbeResult] | None = None
    #: the round is FAILED only because the agent is not connected: a
    #: disconnect grace armed while the round ran still makes it UNKNOWN
    #: (see :func:`in_disconnect_grace`)
    agent_absent: bool = False
    #: each probe's own result, in policy order
    probes: tuple[ProbeRun, ...] = ()


def in_disconnect_grace(grace: float) -> ProbeResult:
    """What "agent not connected" means within a disconnect grace."""
    return ProbeResult.unknown(
        "guest agent not connected, within %ds of a disconnect or of the "
        "start of monitoring (guest shutting down or booting?)" % grace)


class Prober:
    """Runs rounds; stateless apart from the hypervisor and the clock."""

    def __init__(self, hypervisor: HypervisorAPI,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hv = hypervisor
        self._clock = clock

    def run(self, spec: RoundSpec) -> RoundOutcome:
        """One round; never raises (an unexpected error is UNKNOWN)."""
        try:
            return self._run(spec)
        except Exception as exc:
            LOG.exception("probing %s failed unexpectedly", spec.uuid)
            return RoundOutcome(ProbeResult.unknown("monitor error: %s" % exc))

    def _run(self, spec: RoundSpec) -> RoundOutcome:
        # No state check up front (it costs libvirtd three calls per
        # round): a failed agent call re-reads the state, and a paused,
        # migrating or stopped domain then turns the failure into UNKNOWN.
        if spec.probe_error:
            return RoundOutcome(ProbeResult.unknown(spec.probe_error))
        agent = self._hv.agent(spec.uuid)
        answered = False
        learnt = None
        if spec.check_capabilities:
            try:
                learnt = capabilities.discover(agent, spec.probes, spec.timeout)
            except AgentError as exc:
                result = self._failed_call(spec, exc)
                return RoundOutcome(result, agent_absent=(
                    exc.kind is ErrorKind.AGENT_NOT_CONNECTED
                    and result.verdict is Verdict.FAILED))
            answered = True
            for result in learnt.values():
                LOG.warning("domain %s (%s): %s", spec.name, spec.uuid, result.reason)
        blocked = spec.blocked if learnt is None else learnt
        results = []
        runs = []
        absent: list[ProbeResult] = []   # FAILED only for want of an agent
        for probe in spec.probes:
            if probe.name in blocked:
                results.append(blocked[probe.name])
                runs.append(ProbeRun(probe.name, blocked[probe.name], 0.0, skipped=True))
                continue
            # Each probe has the policy's timeout to itself: a slow but
            # healthy agent answering ping must not eat the application
            # check's time and make a healthy check FAILED.
            started = self._clock()
            try:
                result = probe.run(agent, spec.timeout)
            except AgentError as exc:
                result = self._failed_call(spec, exc)
                if exc.kind is ErrorKind.AGENT_NOT_CONNECTED:
                    absent.append(result)
            results.append(result)
            runs.append(ProbeRun(probe.name, result, self._clock() - started))
            # Only a HEALTHY answer proves the agent is there: a probe may
            # turn a failed call into a verdict of its own.
            answered = answered or result.verdict is Verdict.HEALTHY
        result = verdict_mod.combine(results)
        grace_left = spec.startup_grace_until - self._clock()
        if result.verdict is Verdict.FAILED and grace_left > 0 and not result.reset_requested:
            result = ProbeResult.unknown("in startup grace (%ds left): %s"
                                         % (grace_left, result.reason))
        failed = [r for r in results if r.verdict is Verdict.FAILED]
        agent_absent = bool(failed) and all(any(r is a for a in absent) for r in failed)
        return RoundOutcome(result, agent_answered=answered, blocked=learnt,
                            agent_absent=agent_absent and result.verdict is Verdict.FAILED,
                            probes=tuple(runs))

    def _failed_call(self, spec: RoundSpec, exc: AgentError) -> ProbeResult:
        """What a failed agent call says about the guest."""
        if (exc.kind is ErrorKind.AGENT_NOT_CONNECTED
                and self._clock() < spec.disconnect_grace_until):
            return in_disconnect_grace(spec.disconnect_grace)
        return verdict_mod.verdict_for(exc.kind, self._state_or_gone(spec.uuid), exc.message)

    def _state_or_gone(self, uuid: str) -> DomainState:
        """Re-read the state after a failed call: a guest paused or
        stopped during the call is UNKNOWN, not FAILED."""
        try:
            return self._hv.domain_state(uuid)
        except HypervisorUnavailable:
            return DomainState.NOSTATE
