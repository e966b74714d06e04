"""The storm guard: pure decisions as tables, the stateful guard with a
fake clock and a recording logger."""
import dataclasses
import logging

import pytest

from masakarimonitors_iim.guards.storm import (
    Counts, Failing, StormGuard, StormSettings, StormState, counted, counts, needed, step,
    trips)
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.verdict import ProbeResult

DEFAULT = StormSettings()
FAILED = ProbeResult.failed("guest agent did not answer in time")
HEALTHY = ProbeResult.healthy()
UNKNOWN = ProbeResult.unknown("domain is paused")


@pytest.mark.parametrize("watched, settings, want", [
    (0, DEFAULT, 3),
    (4, DEFAULT, 3),          # the minimum rules small hosts
    (6, DEFAULT, 3),
    (7, DEFAULT, 4),          # then the share: ceil(3.5)
    (10, DEFAULT, 5),
    (100, DEFAULT, 50),
    (10, StormSettings(min_domains=2, ratio=0.3), 3),   # 0.3 x 10 is 3, not 4
    (3, StormSettings(min_domains=2, ratio=0.5), 2),
])
def test_needed(watched, settings, want):
    assert needed(watched, settings) == want


@pytest.mark.parametrize("failing, watched, settings, want", [
    # a handful of guests: independent failures are never hidden
    (1, 1, DEFAULT, False),
    (2, 2, DEFAULT, False),
    (2, 4, DEFAULT, False),
    (3, 4, DEFAULT, True),
    (3, 5, DEFAULT, True),
    # a big host: a share, not a count
    (4, 10, DEFAULT, False),
    (5, 10, DEFAULT, True),
    (49, 100, DEFAULT, False),
    (50, 100, DEFAULT, True),
    # nothing watched, or the guard off
    (0, 0, DEFAULT, False),
    (5, 5, StormSettings(min_domains=0), False),
    # the e2e test's settings: 2 of 3
    (2, 3, StormSettings(min_domains=2, ratio=0.5), True),
    (1, 2, StormSettings(min_domains=2, ratio=0.5), False),
])
def test_trips(failing, watched, settings, want):
    assert trips(failing, watched, settings) is want


def test_counts_failing_watched_domains_and_those_that_began_within_the_window():
    domains = {
        "new": Failing(began=100.0, last=118.0),
        "old": Failing(began=10.0, last=118.0),            # failing for long
        "backlogged": Failing(began=100.0, last=30.0),     # not probed since: still FAILED
        "paused": Failing(began=100.0, last=70.0, silent=True),   # UNKNOWN since
        "paused-long": Failing(began=10.0, last=50.0, silent=True),
        "gone": Failing(began=100.0, last=118.0),
    }
    watched = set(domains) - {"gone"}
    assert counts(domains, watched, now=120.0, window=60.0) == Counts(4, 3, 4)
    assert counts(domains, watched, now=120.0, window=20.0) == Counts(3, 2, 3)
    assert counts(domains, set(), now=120.0, window=60.0) == Counts(0, 0, 0)


@pytest.mark.parametrize("released, storm_began, want", [
    (0.0, -float("inf"), Counts(4, 3, 4)),
    # a storm that tripped at 90 (window 60): what began from 30 keeps it
    (0.0, 30.0, Counts(4, 3, 3)),
    # released at 100: the failures that began by then trip nothing and
    # keep nothing; only the one that began after
    (100.0, -float("inf"), Counts(4, 1, 1)),
    (100.0, 30.0, Counts(4, 1, 1)),
    (110.0, 30.0, Counts(4, 0, 0)),
])
def test_counts_after_a_release_and_since_a_storm_began(released, storm_began, want):
    domains = {
        "storm-1": Failing(began=100.0, last=118.0),
        "storm-2": Failing(began=90.0, last=118.0),
        "after-release": Failing(began=105.0, last=118.0),
        "for-days": Failing(began=5.0, last=118.0),     # observe mode, or reported
    }
    assert counts(domains, set(domains), now=120.0, window=60.0, released=released,
                  storm_began=storm_began) == want


@pytest.mark.parametrize("state, want", [
    (None, False),
    (State.DISCOVERY, False),     # booting, or no working agent: no sign of the host
    (State.HEALTHY, True),
    (State.FAILING, True),
    (State.REPORTED, True),
])
def test_counted(state, want):
    rec = None if state is None else dataclasses.replace(
        machine.new_record("u", "vm", 0.0), state=state)
    assert counted(rec) is want


S = StormSettings(min_domains=3, ratio=0.5, window=60.0, max_hold=600.0)
HOLDING = StormState(holding=True, since=100.0, failing=5, watched=8)
CALM = StormState(True, 100.0, 150.0, 1, 8)


@pytest.mark.parametrize("state, failing, recent, lasting, watched, now, want", [
    # quiet stays quiet, counts kept for status
    (StormState(), 2, 2, 2, 8, 100.0, StormState(failing=2, watched=8)),
    # trips at once on failures that began within the window...
    (StormState(), 4, 4, 4, 8, 100.0, StormState(True, 100.0, None, 4, 8)),
    # ...not on old ones: one failing for days plus three new of eight
    (StormState(), 4, 3, 3, 8, 100.0, StormState(failing=4, watched=8)),
    # holding: still failing keeps holding and its start, however old
    (HOLDING, 6, 0, 6, 8, 150.0, StormState(True, 100.0, None, 6, 8)),
    # ...but only failures that began with the storm: four failing for
    # days (observe mode, reported and never recovered) do not keep it
    (HOLDING, 5, 0, 1, 8, 150.0, StormState(True, 100.0, 150.0, 1, 8)),
    # holding: below the condition starts the calm...
    (HOLDING, 1, 0, 1, 8, 150.0, StormState(True, 100.0, 150.0, 1, 8)),
    # ...which a new failure cancels...
    (CALM, 4, 1, 4, 8, 170.0, StormState(True, 100.0, None, 4, 8)),
    # ...or which lasts a whole window to clear (not a moment less)
    (CALM, 1, 0, 1, 8, 209.0, CALM),
    (CALM, 1, 0, 1, 8, 210.0, StormState(False, 210.0, None, 1, 8)),
    # domains going away count as calm too
    (HOLDING, 4, 0, 4, 7, 150.0, StormState(True, 100.0, None, 4, 7)),
    (HOLDING, 3, 0, 3, 7, 150.0, StormState(True, 100.0, 150.0, 3, 7)),
    (HOLDING, 2, 2, 2, 2, 150.0, StormState(True, 100.0, 150.0, 2, 2)),
    # max_hold: holds up to a moment before it...
    (HOLDING, 6, 0, 6, 8, 699.0, StormState(True, 100.0, None, 6, 8)),
    # ...then releases although the condition holds, and marks the release
    (HOLDING, 6, 0, 6, 8, 700.0, StormState(False, 700.0, None, 6, 8, released=700.0)),
    # 10 hung, 5 recovered, 5 hung for good: released all the same
    (StormState(True, 100.0, None, 5, 10), 5, 0, 5, 10, 700.0,
     StormState(False, 700.0, None, 5, 10, released=700.0)),
    # released in the calm too (the clear was due later)
    (StormState(True, 100.0, 680.0, 1, 8), 1, 0, 1, 8, 700.0,
     StormState(False, 700.0, None, 1, 8, released=700.0)),
    # after the release its failures do not trip (counts() leaves them
    # out of recent); the release is remembered
    (StormState(False, 700.0, None, 6, 8, released=700.0), 6, 0, 0, 8, 710.0,
     StormState(False, 700.0, None, 6, 8, released=700.0)),
    # new failures after it do, and the release is kept for the next one
    (StormState(False, 700.0, None, 6, 8, released=700.0), 8, 4, 4, 8, 750.0,
     StormState(True, 750.0, None, 4, 8, released=700.0)),
    # a later normal clear keeps it too
    (StormState(True, 750.0, 800.0, 1, 8, released=700.0), 6, 0, 1, 8, 860.0,
     StormState(False, 860.0, None, 6, 8, released=700.0)),
])
def test_step(state, failing, recent, lasting, watched, now, want):
    assert step(state, Counts(failing, recent, lasting), watched, now, S) == want


def test_turning_the_guard_off_clears_at_once():
    off = StormSettings(min_domains=0, ratio=0.5, window=60.0)
    assert step(HOLDING, Counts(8, 8, 8), 8, 150.0, off) == StormState(
        False, 150.0, None, 8, 8)


class RecordingLog:
    def __init__(self):
        self.lines = []

    def log(self, level, msg, *args):
        self.lines.append((level, msg % args))

    def at(self, level):
        return [text for lvl, text in self.lines if lvl == level]


class Host:
    """A guard on a host watching ``n`` domains d0..d(n-1)."""

    def __init__(self, n, settings=S):
        self.watched = {"d%d" % i for i in range(n)}
        self.log = RecordingLog()
        self.changes = []
        self.guard = StormGuard(settings, watched=lambda: self.watched,
                                on_change=self.changes.append, logger=self.log)

    def round(self, now, failed=(), healthy=None):
        """One round: ``failed`` domains FAILED, the rest HEALTHY (or only
        ``healthy`` HEALTHY, the others silent)."""
        for uuid in sorted(self.watched):
            if uuid in failed:
                self.guard.note(uuid, FAILED, now)
            elif healthy is None or uuid in healthy:
                self.guard.note(uuid, HEALTHY, now)

    def held(self, uuid, now):
        return self.guard.hold(uuid, uuid, FAILED, now)


def test_a_storm_holds_logs_one_critical_line_and_clears_by_itself():
    host = Host(8)
    host.round(100.0)
    assert host.held("d0", 100.0) is None
    failing = {"d0", "d1", "d2", "d3"}
    for t in range(110, 200, 10):
        host.round(float(t), failed=failing)
        reason = host.held("d0", float(t))
        assert reason is not None and "4 of 8 domains of this host failing" in reason
    critical = host.log.at(logging.CRITICAL)
    assert len(critical) == 1, host.log.lines
    assert "4 of 8 monitored domains began failing within 60 s (trips at 4)" in critical[0]
    assert "check libvirtd" in critical[0]
    assert host.changes == [True]

    # The host recovers: two guests come back, two stay failing.
    for t in range(200, 260, 10):
        host.round(float(t), failed={"d0", "d1"})
        assert host.held("d0", float(t)) is not None, t   # not a whole window yet
    host.round(260.0, failed={"d0", "d1"})
    assert host.held("d0", 260.0) is None
    assert host.changes == [True, False]
    cleared = host.log.at(logging.WARNING)
    assert len(cleared) == 1 and "storm guard cleared after 150 s" in cleared[0], cleared
    assert len(host.log.at(logging.CRITICAL)) == 1
    # and stays clear, without more log lines
    for t in range(270, 400, 10):
        host.round(float(t), failed={"d0", "d1"})
    assert host.held("d1", 400.0) is None
    assert len(host.log.lines) == 2


def test_on_a_small_host_two_independent_failures_are_not_held_with_the_defaults():
    host = Host(4, settings=StormSettings())
    for t in range(0, 600, 10):
        host.round(float(t), failed={"d1", "d3"})
        assert host.held("d1", float(t)) is None
        assert host.held("d3", float(t)) is None
    assert host.log.lines == [] and host.changes == []


def test_unknown_neither_counts_nor_clears_and_a_silent_failure_ages_out():
    host = Host(4)
    host.round(100.0, failed={"d0", "d1", "d2"})
    assert host.guard.state.holding
    # Paused (UNKNOWN): still counted while the failure is recent...
    for uuid in ("d0", "d1", "d2"):
        host.guard.note(uuid, UNKNOWN, 150.0)
    assert host.guard.update(150.0).failing == 3
    # ...not once it is older than the window.
    assert host.guard.update(161.0).failing == 0
    assert host.guard.state.holding          # the calm has only begun
    assert not host.guard.update(221.0).holding


def test_recovered_and_unwatched_domains_stop_counting():
    host = Host(4)
    host.round(100.0, failed={"d0", "d1", "d2"})
    assert host.guard.state.failing == 3
    host.guard.note("d0", HEALTHY, 101.0)
    assert host.guard.state.failing == 2
    host.watched.discard("d1")               # stopped: no longer watched
    assert host.guard.update(102.0).failing == 1
    host.guard.forget("d2")
    assert host.guard.update(103.0).failing == 0


def test_only_watched_domains_make_the_share():
    host = Host(3)
    host.guard.note("stranger-1", FAILED, 100.0)
    host.guard.note("stranger-2", FAILED, 100.0)
    host.guard.note("d0", FAILED, 100.0)
    assert host.guard.state == StormState(failing=1, watched=3)


def test_snapshot_says_what_status_shows():
    host = Host(3, settings=StormSettings(min_domains=2, ratio=0.5, window=30.0))
    assert host.guard.snapshot(50.0) == {
        "enabled": True, "holding": False, "since": None, "calm_since": None,
        "failing": 0, "watched": 3, "needed": 2, "window": 30.0, "max_hold": 1800.0,
        "releases_at": None}
    host.round(100.0, failed={"d0", "d1"})
    snap = host.guard.snapshot(100.0)
    assert (snap["holding"], snap["since"], snap["failing"], snap["releases_at"]) == (
        True, 100.0, 2, 1900.0)


def test_a_domain_failing_for_long_does_not_add_to_new_independent_failures():
    host = Host(4, settings=StormSettings())
    for t in range(0, 600, 10):                 # d0 fails for ten minutes (observe mode)
        host.round(float(t), failed={"d0"})
    for t in range(600, 900, 10):               # then d1 and d2 fail, independently
        host.round(float(t), failed={"d0", "d1", "d2"})
        assert host.held("d1", float(t)) is None, t
    assert host.guard.state.failing == 3 and host.log.lines == []


def test_guests_without_a_working_agent_never_make_a_storm():
    """DISCOVERY domains fail ("not connected") every round from the start."""
    host = Host(6)
    discovery = {"d0", "d1", "d2", "d3"}
    host.guard = StormGuard(S, watched=lambda: host.watched,
                            counts_for=lambda uuid: uuid not in discovery, logger=host.log)
    for t in range(0, 300, 10):
        host.round(float(t), failed=discovery)
    assert host.guard.state.failing == 0 and host.log.lines == []
    # A domain counted while failing leaves the count once it reboots.
    host.round(300.0, failed={"d4", "d5", "d0"})
    assert host.guard.state.failing == 2
    discovery.add("d4")
    host.round(310.0, failed={"d4", "d5"})
    assert host.guard.state.failing == 1


def test_a_storm_keeps_holding_while_a_backlog_probes_failing_domains_rarely():
    host = Host(4)
    host.round(100.0, failed={"d0", "d1", "d2"})
    assert host.guard.state.holding
    # No verdicts for nearly ten minutes (hung guests wait for agent
    # slots): their last verdict is still FAILED, so the storm lasts.
    assert host.guard.update(690.0).holding
    assert host.held("d0", 690.0) is not None


def test_ten_hung_five_recover_five_hung_for_good_are_released_after_max_hold():
    """Storage stalls and comes back: five guests stay hung (they need a
    reset) and meet the trip count forever; max_hold releases them."""
    host = Host(10)
    everyone = set(host.watched)
    host.round(100.0, failed=everyone)
    assert host.guard.state.holding and host.changes == [True]
    stuck = {"d0", "d1", "d2", "d3", "d4"}
    t = 110.0
    while t < 700.0:
        host.round(t, failed=stuck)
        assert host.held("d0", t) is not None, t
        t += 10.0
    host.round(700.0, failed=stuck)            # since + max_hold
    assert host.held("d0", 700.0) is None
    assert host.changes == [True, False]
    released = host.log.at(logging.CRITICAL)[1:]
    assert len(released) == 1, host.log.lines
    assert "storm guard released after 600 s (storm_max_hold)" in released[0]
    assert "5 of 10 monitored domains are still failing" in released[0]
    # A day of the same failures: never held again, not one more line.
    for t in range(710, 86400, 60):
        host.round(float(t), failed=stuck)
        assert host.held("d4", float(t)) is None, t
    assert len(host.log.lines) == 2 and host.changes == [True, False]
    # Failures that begin after the release make a new storm.
    host.round(86400.0, failed=everyone)
    assert host.held("d9", 86400.0) is not None
    assert host.changes == [True, False, True]
    assert "5 of 10 monitored domains began failing" in host.log.at(logging.CRITICAL)[2]


def test_a_release_does_not_trip_again_on_failures_that_began_just_before_it():
    """Failures that began within the window before the release are still
    'recent' by the window alone: the release must not re-trip on them."""
    host = Host(6)
    host.round(100.0, failed={"d0", "d1", "d2"})
    assert host.guard.state.holding
    host.round(695.0, failed=host.watched)      # three more began 5 s before the release
    assert host.guard.state.holding
    for t in (700.0, 701.0, 710.0, 754.0):
        host.round(t, failed=host.watched)
        assert host.held("d5", t) is None, t
    assert host.changes == [True, False]
    assert host.guard.state == StormState(False, 700.0, None, 6, 6, released=700.0)


def test_domains_failing_since_before_the_storm_do_not_keep_it_holding():
    """Four guests failing for hours (observe mode, or reported and never
    recovered) and one still hung after the storm: the storm clears after
    a window, the hung one is not left held until max_hold."""
    host = Host(10)
    old = {"d6", "d7", "d8", "d9"}
    for t in range(10, 1000, 10):
        host.round(float(t), failed=old)
    assert not host.guard.state.holding
    storm = {"d0", "d1", "d2", "d3", "d4"}
    host.round(1000.0, failed=old | storm)
    assert host.guard.state.holding
    host.round(1010.0, failed=old | {"d0"})            # 5 failing, 1 of them from the storm
    assert host.guard.state.failing == 1
    host.round(1069.0, failed=old | {"d0"})
    assert host.held("d0", 1069.0) is not None
    host.round(1070.0, failed=old | {"d0"})
    assert host.held("d0", 1070.0) is None
    assert host.changes == [True, False]
    assert "storm guard cleared after 70 s" in host.log.at(logging.WARNING)[0]


def test_a_domain_that_failed_with_the_storm_keeps_it_whatever_its_state():
    """The first guests of a slow storm may be reported before it trips:
    failing within the window before the trip, they still count."""
    host = Host(8)
    host.round(100.0, failed={"d0", "d1"})             # reported by the time it trips
    host.round(140.0, failed={"d0", "d1", "d2", "d3"})
    assert host.guard.state.holding
    host.round(200.0, failed={"d0", "d1", "d2", "d3"})
    assert host.guard.state == StormState(True, 140.0, None, 4, 8)
