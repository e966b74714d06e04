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
from typing import Callable, Mapping, Sequence

from oslo_log import log as logging

from masakarimonitors_iim import verdict as verdict_mod
from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import (
    Activity, AgentError, DomainState, ErrorKind, HypervisorUnavailable)
from masakarimonitors_iim.probes import capabilities, first_call, freeze
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
    #: sample the domain's I/O counters on a FAILED round that rests only
    #: on a silent agent, for the activity guard (policy ``corroborate``)
    corroborate: bool = True
    #: wall time the guest's filesystems were first seen frozen in the
    #: current freeze, 0 when they were not (for the reason text)
    frozen_since: float = 0.0
    #: cut the first call short (probes/first_call.py): a healthy-lane
    #: round of a guest whose agent answered fast last time
    quick: bool = False


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
    #: the domain's CPU/disk/network counters, sampled only when the round
    #: is FAILED with ``result.agent_only`` (the activity guard compares
    #: samples over the streak); None otherwise or when sampling failed
    activity: Activity | None = None
    #: the guest's filesystems are frozen: every probe is UNKNOWN
    frozen: bool = False
    #: the quick first call got no answer: no verdict; probe again at once
    #: with the full timeout (``result`` only says why)
    recheck: bool = False
    #: seconds the agent took to answer the round's first call (None: it
    #: did not answer), for :func:`first_call.may_be_quick`
    first_answer_seconds: float | None = None


def in_disconnect_grace(grace: float) -> ProbeResult:
    """What "agent not connected" means within a disconnect grace."""
    return ProbeResult.unknown(
        "guest agent not connected, within %ds of a disconnect or of the "
        "start of monitoring (guest shutting down or booting?)" % grace)


#: guest-info is read again after this many rounds while it blocks a
#: probe, so a guest whose qemu-ga policy was relaxed without an agent
#: restart gets its probe back (an agent restart re-reads it anyway).
#: About ten minutes at the default interval; nothing on a guest that
#: blocks nothing.
CAPABILITY_RECHECK_ROUNDS = 60

#: Failed calls that say only that the agent did not answer: the guest
#: may still be working (the activity guard looks), unlike a check that
#: ran and failed, or an agent that answered nonsense.
_AGENT_SILENT = (ErrorKind.AGENT_TIMEOUT, ErrorKind.AGENT_NOT_CONNECTED)


class Prober:
    """Runs rounds; stateless apart from the hypervisor and the clocks
    (``wall`` only dates a freeze for status)."""

    def __init__(self, hypervisor: HypervisorAPI,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._hv = hypervisor
        self._clock = clock
        self._wall = wall

    def run(self, spec: RoundSpec) -> RoundOutcome:
        """One round; never raises (an unexpected error is UNKNOWN)."""
        first = first_call.FirstCall(self._hv.agent(spec.uuid), spec.quick, self._clock)
        try:
            outcome = self._run(spec, freeze.RefusalWatch(first))
        except first_call.Unanswered as exc:
            return RoundOutcome(ProbeResult.unknown(str(exc)), recheck=True)
        except Exception as exc:
            LOG.exception("probing %s failed unexpectedly", spec.uuid)
            return RoundOutcome(ProbeResult.unknown("monitor error: %s" % exc))
        if first.seconds is None:
            return outcome
        return dataclasses.replace(outcome, first_answer_seconds=first.seconds)

    def _run(self, spec: RoundSpec, agent: freeze.RefusalWatch) -> RoundOutcome:
        # No state check up front (it costs libvirtd three calls per
        # round): a failed agent call re-reads the state, and a paused,
        # migrating or stopped domain then turns the failure into UNKNOWN.
        if spec.probe_error:
            return RoundOutcome(ProbeResult.unknown(spec.probe_error))
        answered = False
        learnt = None
        if spec.check_capabilities:
            try:
                learnt = capabilities.discover(agent, spec.probes, spec.timeout)
            except AgentError as exc:
                result = self._failed_call(spec, exc)
                quiet = exc.kind in _AGENT_SILENT and result.verdict is Verdict.FAILED
                return self._judged(spec, RoundOutcome(
                    dataclasses.replace(result, agent_only=quiet), agent_absent=(
                        exc.kind is ErrorKind.AGENT_NOT_CONNECTED and quiet)))
            answered = True
            # guest-info lists nearly every RPC as disabled while the
            # filesystems are frozen: ask before taking it for a block.
            if learnt and freeze.is_frozen(agent, spec.timeout):
                return self._frozen(spec, ())
            for result in learnt.values():
                LOG.warning("domain %s (%s): %s", spec.name, spec.uuid, result.reason)
        blocked = spec.blocked if learnt is None else learnt
        results = []
        runs = []
        absent: list[ProbeResult] = []   # FAILED only for want of an agent
        silent: list[ProbeResult] = []   # FAILED only because the agent did not answer
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
                if exc.kind in _AGENT_SILENT:
                    silent.append(result)
            results.append(result)
            runs.append(ProbeRun(probe.name, result, self._clock() - started))
            # Only a HEALTHY answer proves the agent is there: a probe may
            # turn a failed call into a verdict of its own.
            answered = answered or result.verdict is Verdict.HEALTHY
        if agent.refused and not learnt and freeze.is_frozen(agent, spec.timeout):
            return self._frozen(spec, runs)
        result = verdict_mod.combine(results)
        failed = [r for r in results if r.verdict is Verdict.FAILED]
        if failed and all(any(r is s for s in silent) for r in failed):
            result = dataclasses.replace(result, agent_only=not result.reset_requested)
        grace_left = spec.startup_grace_until - self._clock()
        if result.verdict is Verdict.FAILED and grace_left > 0 and not result.reset_requested:
            result = ProbeResult.unknown("in startup grace (%ds left): %s"
                                         % (grace_left, result.reason))
        agent_absent = bool(failed) and all(any(r is a for a in absent) for r in failed)
        return self._judged(spec, RoundOutcome(
            result, agent_answered=answered, blocked=learnt,
            agent_absent=agent_absent and result.verdict is Verdict.FAILED,
            probes=tuple(runs)))

    def _judged(self, spec: RoundSpec, outcome: RoundOutcome) -> RoundOutcome:
        """Sample the domain's I/O counters when the round is FAILED only
        because the agent is silent: a few libvirt calls, only on such rounds,
        on the worker (guards must not do RPCs)."""
        if not (spec.corroborate and outcome.result.agent_only
                and outcome.result.verdict is Verdict.FAILED):
            return outcome
        try:
            activity = self._hv.domain_activity(spec.uuid)
        except (AgentError, HypervisorUnavailable) as exc:
            LOG.debug("cannot read counters of %s: %s", spec.uuid, exc)
            return outcome
        return dataclasses.replace(outcome, activity=activity)

    def _frozen(self, spec: RoundSpec, runs: Sequence[ProbeRun]) -> RoundOutcome:
        """Every probe UNKNOWN while the filesystems are frozen. What
        guest-info said is not kept (``blocked`` None), so it is read
        again next round, and after the thaw, instead of switching the
        probes off."""
        result = ProbeResult.unknown(freeze.frozen_reason(spec.frozen_since, self._wall()))
        shown = {r.name: r for r in runs}
        return RoundOutcome(result, agent_answered=True, frozen=True, probes=tuple(
            ProbeRun(p.name, result, shown[p.name].seconds if p.name in shown else 0.0,
                     skipped=p.name not in shown)
            for p in spec.probes))

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
