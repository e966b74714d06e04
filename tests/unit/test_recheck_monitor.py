"""A healthy guest that hangs, inside the real Monitor: its quick first
call goes unanswered, it is probed again at once in the suspect lane with
the full timeout, and neither its failure streak nor its cadence moves
(probes/first_call.py, monitor/dispatch.py)."""
import pytest

from masakarimonitors_iim.hypervisor.types import AgentError, ErrorKind
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.monitor.schedule import SUSPECT
from masakarimonitors_iim.verdict import Verdict
from tests.unit.test_monitor import A, B, DeferredPool, Rig, conf  # noqa: F401  (conf: fixture)

PING = "guest-ping"


def hung_when_due(options):
    """A healthy guest A, hung from its next round on; the clock at
    that round's due time."""
    pool = DeferredPool()
    rig = Rig(options, pool=pool)
    rig.hv.add(A, "vm-a")
    rig.mon.step(wait=False)
    pool.run_all()
    rig.mon.step(wait=False)
    due = rig.mon.dispatch.schedule.due_of(A)
    rig.clock.t = due
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    return rig, pool, due


def rechecks(rig):
    return rig.mon.metrics.registry.get_sample_value("masakari_iim_rechecks_total")


def test_the_quick_call_is_cut_the_recheck_decides_and_the_cadence_stays(conf):  # noqa: F811
    rig, pool, due = hung_when_due(conf)
    rig.hv.call_timeouts.clear()

    rig.mon.step(wait=False)                  # the healthy-lane round starts
    pool.run_all()
    rig.clock.t += 1.0
    rig.mon.step(wait=False)                  # unanswered: no verdict, recheck queued
    assert rig.hv.call_timeouts == [(A, PING, 1.0)]
    assert rig.state(A) is State.HEALTHY
    assert rig.mon.registry.watched[A].last_result.verdict is Verdict.HEALTHY
    assert rechecks(rig) == 1.0
    assert len(pool.jobs) == 1                # ...and already started, suspect lane
    assert rig.mon.dispatch.schedule.running and all(
        lane == SUSPECT for lane, _ in rig.mon.dispatch.schedule.running.values())

    pool.run_all()
    rig.mon.step(wait=False)
    assert rig.hv.call_timeouts == [(A, PING, 1.0), (A, PING, 2.0)]
    assert rig.state(A) is State.FAILING
    assert rig.journal.get(A).failures == 1
    # the next round keeps the cadence of the round that hung
    assert rig.mon.dispatch.schedule.due_of(A) == due + 10.0


def test_a_hung_guest_is_still_reported_after_threshold_rounds_once(conf):  # noqa: F811
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.hv.add(B, "vm-b")
    rig.rounds(2)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.hv.call_timeouts.clear()
    rig.rounds(3)
    assert rig.state(A) is State.REPORTED and rig.state(B) is State.HEALTHY
    assert len(rig.notifier.sent) == 1
    # one quick call, then the full timeout while it stays suspect
    assert [t for u, _, t in rig.hv.call_timeouts if u == A] == [1.0, 2.0, 2.0, 2.0]
    assert {t for u, _, t in rig.hv.call_timeouts if u == B} == {1.0}
    assert rechecks(rig) == 1.0


def test_a_slow_agent_keeps_the_full_timeout(conf):  # noqa: F811
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")

    def slow():
        rig.clock.t += 0.7      # alive, but not within FAST_ANSWER
        return {}

    rig.hv.behaviour[A] = slow
    rig.rounds(4)
    # round 1 is a first round (never quick); guest-info answered it fast,
    # so round 2 tries the quick call; the ping's slow answer ends that
    assert [t for _, c, t in rig.hv.call_timeouts if c == PING] == [2.0, 1.0, 2.0, 2.0]
    assert rechecks(rig) == 0.0
    assert rig.state(A) is State.HEALTHY


def test_a_guest_that_answers_the_recheck_stays_healthy(conf):  # noqa: F811
    """A slow moment (or a lost reply): the recheck answers, so nothing is
    counted, and the next round may be quick again."""
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    answers = iter([ErrorKind.AGENT_TIMEOUT])

    def once_silent():
        kind = next(answers, None)
        if kind is not None:
            raise AgentError(kind, "fake timeout")
        return {}

    rig.hv.behaviour[A] = once_silent
    rig.hv.call_timeouts.clear()
    rig.rounds(2)
    assert [t for _, _, t in rig.hv.call_timeouts] == [1.0, 2.0, 1.0]
    assert rig.state(A) is State.HEALTHY and rig.journal.get(A).failures == 0
    assert rechecks(rig) == 1.0


def test_no_quick_call_when_the_timeout_is_libvirts_shortest(conf):  # noqa: F811
    conf.set_override("guest_monitoring_timeout", 1, group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(1)
    assert rig.journal.get(A).failures == 1
    assert rechecks(rig) == 0.0


def test_a_recheck_that_waited_past_the_next_due_time_stands_for_that_round(conf):  # noqa: F811
    rig, pool, due = hung_when_due(conf)
    rig.mon.step(wait=False)
    pool.run_all()
    rig.clock.t = due + 12.0                  # a backlog: the recheck starts late
    rig.mon.step(wait=False)
    pool.run_all()
    rig.mon.step(wait=False)
    assert rig.journal.get(A).failures == 1
    # not due again at once (due + 10 is past): the recheck was that round
    assert rig.mon.dispatch.schedule.due_of(A) == pytest.approx(due + 20.0)
