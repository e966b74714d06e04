"""The pure schedule: lanes, slot shares, due order, backlog, cadence."""
import pytest

from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.monitor.schedule import (
    HEALTHY, SUSPECT, Backlog, Schedule, confirmable, lane_for, next_due, suspect_slots)
from masakarimonitors_iim.verdict import Verdict


@pytest.mark.parametrize("slots, share", [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_suspects_never_hold_every_slot_unless_there_is_one(slots, share):
    assert suspect_slots(slots) == share


@pytest.mark.parametrize("slots, interval, timeout, hung", [
    (4, 10.0, 2.0, 15.0),      # default: 3 suspect slots x 5 timeouts per interval
    (5, 10.0, 2.0, 20.0),
    (2, 10.0, 5.0, 2.0),
])
def test_hung_guests_confirmable_per_interval(slots, interval, timeout, hung):
    assert confirmable(slots, interval, timeout) == hung


@pytest.mark.parametrize("verdict, state, lane", [
    (Verdict.HEALTHY, State.HEALTHY, HEALTHY),
    (Verdict.FAILED, State.HEALTHY, SUSPECT),      # first timeout: suspect from now on
    (Verdict.UNKNOWN, State.HEALTHY, SUSPECT),
    (Verdict.HEALTHY, State.FAILING, HEALTHY),     # answered again: the last verdict decides
    (None, State.FAILING, SUSPECT),                # after a restart of the monitor
    (None, State.REPORTED, SUSPECT),
    (None, State.DISCOVERY, HEALTHY),              # a new domain gets a first chance
    (None, State.HEALTHY, HEALTHY),
    (None, None, HEALTHY),
])
def test_lane(verdict, state, lane):
    assert lane_for(verdict, state) == lane


@pytest.mark.parametrize("due, now, interval, expected", [
    (100.0, 100.0, 10.0, 110.0),     # on time
    (100.0, 100.04, 10.0, 110.0),    # a late wake-up does not drift the cadence
    (100.0, 99.96, 10.0, 110.0),     # nor an early one (batched)
    (100.0, 104.0, 10.0, 110.0),     # waited 4 s for a slot: keeps its cadence
    (100.0, 112.0, 10.0, 122.0),     # missed a whole interval: no catch-up burst
])
def test_next_due(due, now, interval, expected):
    assert next_due(due, now, interval) == expected


def started(schedule, now, slack=0.0):
    return [(s.uuid, s.lane) for s in schedule.take(now, slack)]


def test_rounds_start_in_due_order_when_due_and_not_before():
    s = Schedule(4)
    s.put("c", 30.0, HEALTHY)
    s.put("a", 10.0, HEALTHY)
    s.put("b", 20.0, HEALTHY)
    assert started(s, 9.0) == []
    assert s.next_wake() == 10.0
    assert started(s, 20.0) == [("a", HEALTHY), ("b", HEALTHY)]
    assert started(s, 29.96, slack=0.05) == [("c", HEALTHY)]     # batched: early, never late
    assert s.next_wake() is None and len(s) == 0


def test_put_again_replaces_and_cancel_forgets():
    s = Schedule(4)
    s.put("a", 10.0, HEALTHY)
    s.put("a", 50.0, SUSPECT)          # rescheduled (say, restarted)
    s.put("b", 10.0, HEALTHY)
    s.cancel("b")
    assert started(s, 10.0) == []
    assert s.next_wake() == 50.0
    assert started(s, 50.0) == [("a", SUSPECT)]


# Table: slots, (uuid, lane) ready at t=0 in this order -> what starts, and the backlog.
LANE_TABLE = [
    # 4 slots: suspects get at most 3, the healthy lane the rest.
    (4, [("h1", HEALTHY), ("s1", SUSPECT), ("s2", SUSPECT), ("s3", SUSPECT), ("s4", SUSPECT)],
     ["h1", "s1", "s2", "s3"], {HEALTHY: 0, SUSPECT: 1}),
    # 100 suspects due: still 3; a healthy one due after them goes first.
    (4, [("s%d" % i, SUSPECT) for i in range(100)] + [("h1", HEALTHY)],
     ["h1", "s0", "s1", "s2"], {HEALTHY: 0, SUSPECT: 97}),
    # healthy rounds may take every slot (they take milliseconds)
    (4, [("h%d" % i, HEALTHY) for i in range(6)],
     ["h0", "h1", "h2", "h3"], {HEALTHY: 2, SUSPECT: 0}),
    # one slot: the lanes share it (no reserve possible), healthy first
    (1, [("s1", SUSPECT), ("h1", HEALTHY)], ["h1"], {HEALTHY: 0, SUSPECT: 1}),
    # two slots: one for suspects, one kept for healthy ones
    (2, [("s1", SUSPECT), ("s2", SUSPECT)], ["s1"], {HEALTHY: 0, SUSPECT: 1}),
]


@pytest.mark.parametrize("slots, ready, starts, waiting", LANE_TABLE)
def test_lanes_and_shares(slots, ready, starts, waiting):
    s = Schedule(slots)
    for i, (uuid, lane) in enumerate(ready):
        s.put(uuid, i * 0.001, lane)
    assert [u for u, _ in started(s, 1.0)] == starts
    backlog = s.backlog(1.0)
    assert dict(backlog.by_lane) == waiting
    assert backlog.overdue == sum(waiting.values())


def test_hung_suspects_never_delay_a_healthy_round():
    """Three suspects hold their slots for the whole timeout; healthy
    rounds due meanwhile start at once, one after another, on the slot
    the suspects cannot take."""
    s = Schedule(4)
    for i in range(10):
        s.put("s%d" % i, 0.0, SUSPECT)
    hung = s.take(0.0)
    assert [x.lane for x in hung] == [SUSPECT] * 3
    for k in range(5):
        t = 0.1 + k * 0.1
        s.put("h%d" % k, t, HEALTHY)
        (h,) = s.take(t)
        assert (h.uuid, h.due) == ("h%d" % k, t)        # started when due: not late
        s.finished(h.token)                             # 3 ms later
    assert s.backlog(0.6).by_lane == ((HEALTHY, 0), (SUSPECT, 7))


def test_a_healthy_round_that_turns_slow_counts_against_the_suspects():
    """A guest that hung since its last round runs in the healthy lane;
    past slow_after its slot counts as a suspect's, so the next free slot
    goes to the healthy lane, not to another suspect."""
    s = Schedule(4, slow_after=0.5)
    s.put("newly-hung", 0.0, HEALTHY)
    assert started(s, 0.0) == [("newly-hung", HEALTHY)]
    s.put("s0", 0.1, SUSPECT)
    s.put("s1", 0.1, SUSPECT)
    assert len(s.take(0.1)) == 2
    s.put("s2", 0.6, SUSPECT)
    assert s.suspect_running(0.6) == 3      # the healthy-lane round is slow now
    assert s.take(0.6) == []                # the free 4th slot stays with healthy rounds
    assert s.wake_lanes(0.6) == frozenset((SUSPECT,))
    s.put("h", 0.7, HEALTHY)
    assert started(s, 0.7) == [("h", HEALTHY)]


def test_backlog_counts_ready_rounds_and_the_oldest_wait():
    s = Schedule(2)
    s.put("s1", 0.0, SUSPECT)
    s.put("s2", 1.0, SUSPECT)
    s.put("s3", 2.0, SUSPECT)
    (first,) = s.take(2.0)
    assert s.backlog(5.0) == Backlog(2, 4.0, ((HEALTHY, 0), (SUSPECT, 2)))
    s.cancel("s2")                          # unwatched while waiting
    assert s.backlog(5.0) == Backlog(1, 3.0, ((HEALTHY, 0), (SUSPECT, 1)))
    s.finished(first.token)
    assert started(s, 5.0) == [("s3", SUSPECT)]
    assert s.backlog(5.0) == Backlog(0, 0.0, ((HEALTHY, 0), (SUSPECT, 0)))


@pytest.mark.parametrize("ready, running, wake", [
    ([], [], frozenset()),                                     # nothing waits
    ([HEALTHY], [HEALTHY] * 4, frozenset((HEALTHY, SUSPECT))),  # any free slot helps
    ([SUSPECT], [SUSPECT] * 3, frozenset((SUSPECT,))),          # only a suspect's slot
    ([SUSPECT], [HEALTHY] * 4, frozenset((HEALTHY, SUSPECT))),  # share not used up
])
def test_which_finishing_rounds_wake_the_scheduler(ready, running, wake):
    s = Schedule(4)
    for i, lane in enumerate(running):
        s.put("r%d" % i, 0.0, lane)
    assert len(s.take(0.0)) == len(running)
    for i, lane in enumerate(ready):
        s.put("w%d" % i, 0.0, lane)
    s.take(0.0)
    assert s.wake_lanes(0.1) == wake


def test_a_domain_rewatched_while_its_old_round_runs_keeps_slots_counted():
    s = Schedule(2)
    s.put("a", 0.0, HEALTHY)
    (old,) = s.take(0.0)
    s.put("a", 0.0, HEALTHY)                # watched anew; its old round still runs
    (new,) = s.take(0.0)
    assert old.token != new.token
    s.finished(old.token)
    assert list(s.running) == [new.token]


def test_scales_with_due_work_not_with_domains():
    """10 000 domains, one due: a wake-up starts it without touching the rest."""
    s = Schedule(4)
    for i in range(10000):
        s.put("d%d" % i, 100.0 + i, HEALTHY)
    assert started(s, 100.0) == [("d0", HEALTHY)]
    assert s.next_wake() == 101.0


class Lines:
    def __init__(self):
        self.lines = []

    def log(self, level, text, exc_info=False):
        self.lines.append(text)


def test_a_backlog_is_said_once_when_it_lasts_and_once_when_it_clears():
    from masakarimonitors_iim.monitor.backlog import BacklogWatch

    log, gauges = Lines(), []
    watch = BacklogWatch(log, slots=4, suspect_slots=3,
                         set_metrics=lambda n, s: gauges.append((n, s)))
    lanes = ((HEALTHY, 0), (SUSPECT, 5))
    steps = [
        (0.0, Backlog(5, 0.5, lanes), False),     # waiting, not for long yet: not said
        (1.0, Backlog(5, 1.5, lanes), True),      # said once
        (2.0, Backlog(9, 3.0, lanes), False),     # grows: not said again
        (3.0, Backlog(0, 0.0, ()), False),        # none waits: not said yet...
        (20.0, Backlog(9, 3.0, lanes), False),    # ...and back within 30 s: one episode
        (21.0, Backlog(0, 0.0, ()), False),
        (50.0, Backlog(0, 0.0, ()), False),
        (51.0, Backlog(0, 0.0, ()), True),        # none for 30 s: cleared, said once
        (90.0, Backlog(0, 0.0, ()), False),
    ]
    for now, backlog, said in steps:
        assert watch.update(backlog, now) is said, now
    assert len(log.lines) == 2
    assert log.lines[0].startswith("probe backlog: 5 rounds due")
    assert "3 x interval / timeout" in log.lines[0]
    assert log.lines[1] == "probe backlog cleared (at most 9 rounds waited for an agent slot)"
    assert gauges == [(5, 0.5), (5, 1.5), (9, 3.0), (0, 0.0), (9, 3.0), (0, 0.0)]
    assert watch.snapshot() == {"overdue": 0, "oldest_seconds": 0.0, "lanes": {},
                                "slots": 4, "suspect_slots": 3}


@pytest.mark.parametrize("slots, suspects_running, held", [
    (4, 0, True),
    (4, 2, True),
    (4, 3, False),      # the suspect share is full: the healthy reserve stays
    (2, 1, False),
    (1, 0, True),       # one slot: shared
])
def test_a_clean_up_holds_a_slot_of_the_suspect_share(slots, suspects_running, held):
    s = Schedule(slots)
    for i in range(suspects_running):
        s.put("s%d" % i, 0.0, SUSPECT)
    assert len(s.take(0.0)) == suspects_running
    token = s.hold(0.0)
    assert (token is not None) is held
    if token is not None:
        assert s.suspect_running(0.0) == suspects_running + 1
        s.finished(token)
        assert s.suspect_running(0.0) == suspects_running


def test_a_held_slot_is_not_given_to_a_round():
    s = Schedule(2)
    token = s.hold(0.0)
    s.put("h1", 0.0, HEALTHY)
    s.put("h2", 0.0, HEALTHY)
    assert started(s, 0.0) == [("h1", HEALTHY)]
    s.finished(token)
    assert started(s, 0.0) == [("h2", HEALTHY)]
