"""The storm guard's pure decision, as tables."""
import dataclasses

import pytest

from masakarimonitors_iim.guards.storm_rules import (
    Counts, Failing, StormSettings, StormState, counted, counts, needed, step, trips)
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State

DEFAULT = StormSettings()


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
