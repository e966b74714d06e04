"""What a round's outcome, or the loss of libvirt, changes: verdicts.

The scheduler thread's other half (:mod:`monitor.dispatch` starts the
rounds): a round's outcome becomes the domain's last verdict, what the
round learnt about the guest is kept, the metrics and the activity
guard see it, and the :class:`JournalWriter` runs the state machine on
it. An outcome from a round that no longer applies (the domain was
unwatched or restarted while it ran) is dropped here, and a round whose
quick first call went unanswered (probes/first_call.py) changes nothing
but the domain's next round.
"""
from __future__ import annotations

from typing import Callable

from oslo_log import log as logging

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.guards.activity import ActivityGuard
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.monitor.domains import Watched
from masakarimonitors_iim.monitor.metrics import Metrics
from masakarimonitors_iim.monitor.registry import Registry
from masakarimonitors_iim.monitor.results import JournalWriter
from masakarimonitors_iim.prober import RoundOutcome, in_disconnect_grace
from masakarimonitors_iim.verdict import ProbeResult, Verdict

LOG = logging.getLogger(__name__)


class Applier:
    """Applies outcomes on the scheduler thread; holds no state of its own."""

    def __init__(self, *, registry: Registry, results: JournalWriter, metrics: Metrics,
                 activity: ActivityGuard, disconnect_grace: float,
                 clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self._registry = registry
        self._results = results
        self._metrics = metrics
        self._activity = activity
        self._grace = disconnect_grace
        self._clock = clock
        self._wall = wall

    def outcome(self, w: Watched, generation: int, outcome: RoundOutcome) -> None:
        uuid = w.info.uuid
        if self._registry.watched.get(uuid) is not w:
            return  # unwatched (and maybe watched anew) while this round ran
        if generation != w.generation:
            return  # the domain restarted while this round ran
        if outcome.recheck:
            # No verdict: the quick first call only showed that the guest
            # did not answer within a second; the re-probe decides.
            w.recheck_at = self._clock()
            self._metrics.recheck()
            LOG.debug("domain %s (%s): %s", w.info.name, uuid, outcome.result.reason)
            return
        w.learn(outcome, self._wall())
        result = outcome.result
        if outcome.agent_absent and self._clock() < w.disconnect_grace_until:
            # The agent disconnected (or libvirt came back) while the round
            # ran: the grace armed since then applies to it too.
            result = in_disconnect_grace(self._grace)
        self._metrics.round_applied(outcome, result.verdict)
        previous, w.last_result = w.last_result, result
        if previous is None or previous.verdict is not result.verdict:
            log = LOG.warning if result.verdict is Verdict.FAILED else LOG.info
            log("domain %s (%s): %s%s", w.info.name, uuid, result.verdict.value,
                " (%s)" % result.reason if result.reason else "")
        self._activity.sample(uuid, outcome.activity)
        self._results.verdict(uuid, w.info.name, result, w.thresholds())
        w.could_report = machine.can_report(self._results.record(uuid))

    def connection_lost(self, detail: str) -> None:
        """Every watched domain is UNKNOWN from now on. A round still
        waiting on the hung libvirtd would otherwise leave the last verdict
        standing until libvirtd continues; its late outcome is dropped
        (generation), and new rounds fail at once until the reconnect."""
        result = ProbeResult.unknown(one_line(
            "libvirt connection lost (%s); guest health unknown" % (detail or "no reason")))
        for w in list(self._registry.watched.values()):
            w.generation += 1
            previous, w.last_result = w.last_result, result
            if previous is None or previous.verdict is not Verdict.UNKNOWN:
                LOG.info("domain %s (%s): UNKNOWN (%s)", w.info.name, w.info.uuid,
                         result.reason)
            self._results.verdict(w.info.uuid, w.info.name, result, w.thresholds())
