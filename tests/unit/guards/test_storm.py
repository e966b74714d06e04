"""The stateful storm guard with a fake clock and a recording logger
(its pure decision: test_storm_rules.py)."""
import logging

from masakarimonitors_iim.guards.storm import StormGuard, StormSettings, StormState
from masakarimonitors_iim.verdict import ProbeResult

FAILED = ProbeResult.failed("guest agent did not answer in time")
HEALTHY = ProbeResult.healthy()
UNKNOWN = ProbeResult.unknown("domain is paused")
S = StormSettings(min_domains=3, ratio=0.5, window=60.0, max_hold=600.0)


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
