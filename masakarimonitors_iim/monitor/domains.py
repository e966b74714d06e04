"""What the scheduler keeps about each monitored domain while it runs.

The journal holds the durable facts; :class:`Watched` holds the runtime
ones (probe objects, timing, graces, what discovery learnt). It is owned
by the scheduler thread: workers never see it, they get a frozen
:class:`RoundSpec` made from it (:meth:`Watched.round_spec`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from oslo_log import log as logging

from masakarimonitors_iim import policy as policy_mod
from masakarimonitors_iim.hypervisor.types import AgentChannel, DomainInfo
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.prober import (
    CAPABILITY_RECHECK_ROUNDS, ProbeRun, RoundOutcome, RoundSpec)
from masakarimonitors_iim.probes import base as probes_base
from masakarimonitors_iim.probes import first_call
from masakarimonitors_iim.verdict import ProbeResult, Verdict

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Watched:
    """Runtime-only facts about one monitored domain."""

    info: DomainInfo
    policy: policy_mod.EffectivePolicy
    probes: list[probes_base.Probe] = dataclasses.field(default_factory=list)
    probe_error: str = ""
    next_due: float = 0.0
    in_flight: bool = False
    generation: int = 0          # bumped on restart: stale results are dropped
    started_at: float = 0.0      # monotonic, for the startup grace
    #: probe name -> the UNKNOWN result it gives instead of running, because
    #: the guest's qemu-ga blocks an RPC it needs (from guest-info)
    blocked: dict[str, ProbeResult] = dataclasses.field(default_factory=dict)
    capabilities_checked: bool = False
    last_result: ProbeResult | None = None
    #: monotonic time until which "agent not connected" is UNKNOWN, not
    #: FAILED: the agent disconnects first when a guest shuts down or
    #: reboots, and a boot the monitor did not see (it was down, or libvirt
    #: was) looks the same. Cleared when the agent answers.
    disconnect_grace_until: float = 0.0
    #: each probe's part of the last round that ran the probes, and the
    #: wall time it was applied: status shows each probe's own verdict
    #: and its age (a round that could not run them keeps the older ones)
    last_probes: tuple[ProbeRun, ...] = ()
    last_probes_at: float = 0.0
    #: wall time the guest's filesystems were first seen frozen (fsfreeze)
    #: in the current freeze; 0 when not frozen
    frozen_since: float = 0.0
    #: rounds applied since guest-info was read, to read it again now and
    #: then while it blocks a probe (see prober.CAPABILITY_RECHECK_ROUNDS)
    rounds_since_capabilities: int = 0
    #: seconds the agent took to answer the last round's first call (None:
    #: it did not answer), to decide whether the next may be quick
    #: (probes/first_call.py)
    first_answer_seconds: float | None = None
    #: set when a quick first call was not answered: the monotonic time of
    #: the extra round that decides, in the suspect lane, with the full
    #: timeout; ``next_due`` keeps the domain's cadence meanwhile
    recheck_at: float | None = None
    #: the journal says a FAILED round could still lead to a report
    #: (:func:`machine.can_report`): only then are I/O counters sampled
    could_report: bool = True

    def build_probes(self) -> None:
        """(Re)create the probes from the policy; a probe that cannot be
        loaded makes every round UNKNOWN with the reason, logged once."""
        self.probes = []
        self.probe_error = ""
        self.last_probes = ()    # they were about the probes being replaced
        for spec in self.policy.probes:
            try:
                self.probes.append(probes_base.load_probe(spec.name, spec.params))
            except Exception as exc:
                self.probe_error = "probe %r cannot be loaded: %s" % (spec.name, exc)
                LOG.error("domain %s (%s): %s", self.info.name, self.info.uuid,
                          self.probe_error)
                self.probes = []
                return

    def restarted(self, now: float, disconnect_grace: float, loop: bool = False) -> None:
        """A new boot: forget what the old one taught, rebuild the probes
        (close the old ones first), probe again in a second.

        ``loop``: the journal continues a boot not yet proven healthy (a
        guest resetting itself). Its startup grace still runs from the
        first boot, and the disconnect grace never past the first boot's
        deadline: graces started again at each reset would hide the loop
        as UNKNOWN for ever."""
        self.generation += 1
        if not loop:
            self.started_at = now
            self.arm_disconnect_grace(now, disconnect_grace)
        else:
            self.disconnect_grace_until = min(
                now + disconnect_grace, self.started_at + self.policy.boot_deadline)
        self.capabilities_checked = False
        self.last_result = None
        self.first_answer_seconds = None
        self.recheck_at = None
        self.could_report = True
        self.build_probes()
        self.next_due = now + 1.0

    def arm_disconnect_grace(self, now: float, disconnect_grace: float) -> None:
        self.disconnect_grace_until = now + disconnect_grace

    def apply_policy(self, policy: policy_mod.EffectivePolicy) -> bool:
        """Take a reloaded policy; rebuild the probes only if they changed
        (close the old ones first). Returns whether the timeout changed."""
        probes_changed = policy.probes != self.policy.probes
        timeout_changed = policy.timeout != self.policy.timeout
        self.policy = policy
        if probes_changed:
            self.capabilities_checked = False
            self.build_probes()
        return timeout_changed

    def round_spec(self, disconnect_grace: float, quick: bool = False) -> RoundSpec:
        """A frozen copy of what the next round needs; ``quick``: its
        first call may be cut short (the healthy lane asks, see
        :meth:`may_be_quick`)."""
        return RoundSpec(
            uuid=self.info.uuid, name=self.info.name, probes=tuple(self.probes),
            timeout=self.policy.timeout,
            check_capabilities=not self.capabilities_checked,
            blocked=dict(self.blocked), probe_error=self.probe_error,
            startup_grace_until=self.started_at + self.policy.startup_grace,
            disconnect_grace_until=self.disconnect_grace_until,
            disconnect_grace=disconnect_grace,
            corroborate=self.policy.corroborate and self.could_report,
            frozen_since=self.frozen_since, quick=quick and self.may_be_quick())

    def may_be_quick(self) -> bool:
        """A guest last seen healthy whose agent answered fast, and not
        the re-probe of a quick call that went unanswered."""
        return (self.recheck_at is None and self.last_result is not None
                and self.last_result.verdict is Verdict.HEALTHY
                and first_call.may_be_quick(self.first_answer_seconds, self.policy.timeout))

    def thresholds(self) -> machine.Thresholds:
        """How patient the journal is with this domain, from its policy."""
        p = self.policy
        return machine.Thresholds(failure=p.failure_threshold, success=p.success_threshold,
                                  boot_deadline=p.boot_deadline,
                                  boot_report_always=p.boot_report == "always")

    def learn(self, outcome: RoundOutcome, wall: float) -> None:
        """Keep what a round found out about the guest; ``wall`` is when
        it was applied, for status."""
        if outcome.probes:
            self.last_probes = outcome.probes
            self.last_probes_at = wall
        if outcome.blocked is not None:
            self.blocked = dict(outcome.blocked)
            self.capabilities_checked = True
            self.rounds_since_capabilities = 0
        self.rounds_since_capabilities += 1
        if self.blocked and self.rounds_since_capabilities > CAPABILITY_RECHECK_ROUNDS:
            self.capabilities_checked = False   # the guest may allow it now
        if outcome.frozen:
            self.frozen_since = self.frozen_since or wall
        elif outcome.agent_answered:
            self.frozen_since = 0.0
        if outcome.agent_answered:
            self.disconnect_grace_until = 0.0
        self.first_answer_seconds = outcome.first_answer_seconds

    def closer(self, agent: AgentChannel) -> Callable[[], None] | None:
        """A job that releases what the probes left in the guest (a pending
        exec); run it on a worker, since it talks to the agent. None when
        there is nothing to close."""
        probes = list(self.probes)
        if not probes:
            return None
        uuid = self.info.uuid

        def job() -> None:
            for p in probes:
                try:
                    p.close(agent)
                except Exception as exc:
                    LOG.warning("closing probe %s of %s failed: %s", p.name, uuid, exc)
        return job


def snapshot(hostname: str, now: float, monotonic: float, watched: Mapping[str, Watched],
             unmonitored: Mapping[str, str],
             unmonitored_info: Mapping[str, DomainInfo]) -> dict[str, Any]:
    """What only the running monitor knows, for ``masakari-iim status``
    (:mod:`masakarimonitors_iim.status.model` reads it): verdicts are in
    the journal; display names, each probe's last run, graces and why a
    domain is unmonitored are not. ``now`` is wall time, ``monotonic`` the
    scheduler's clock at the same instant: graces run on the latter and
    are written as wall times (null when not in force). Shape::

        {"host": str, "written_at": wall time,
         "monitored": {uuid: {"name", "display_name", "capability",
                              "probes": [{"name", "verdict", "reason", "seconds",
                                          "skipped", "at"}],
                              "startup_grace_until", "disconnect_grace_until",
                              "boot_deadline" (s), "boot_report", "action"}},
         "unmonitored": {uuid: why},
         "unmonitored_names": {uuid: {"name", "display_name"}}}
    """
    def wall(until: float) -> float | None:
        return now + (until - monotonic) if until > monotonic else None

    return {
        "host": hostname,
        "written_at": now,
        "monitored": {
            uuid: {"name": w.info.name, "display_name": _display_name(w.info),
                   "capability": "; ".join(r.reason for r in w.blocked.values()),
                   "probes": [{"name": run.name, "verdict": run.result.verdict.value,
                               "reason": run.result.reason, "seconds": run.seconds,
                               "skipped": run.skipped, "at": w.last_probes_at}
                              for run in w.last_probes],
                   "startup_grace_until": wall(w.started_at + w.policy.startup_grace),
                   "boot_deadline": w.policy.boot_deadline,
                   "boot_report": w.policy.boot_report,
                   "action": w.policy.action,
                   "disconnect_grace_until": wall(w.disconnect_grace_until)}
            for uuid, w in watched.items()},
        "unmonitored": dict(unmonitored),
        "unmonitored_names": {
            uuid: {"name": info.name, "display_name": _display_name(info)}
            for uuid, info in unmonitored_info.items()},
    }


def _display_name(info: DomainInfo) -> str:
    """Nova's name for the instance, which operators know it by."""
    return info.nova.instance_name if info.nova else ""
