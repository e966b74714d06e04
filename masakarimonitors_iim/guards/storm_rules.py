"""The storm guard's decision: when many of this host's domains failing
at once trip it, what keeps it holding, when it clears or releases.

Pure and table-tested (tests/unit/guards/test_storm_rules.py); the guard
that keeps each domain's failure streak and logs the transitions is
:class:`masakarimonitors_iim.guards.storm.StormGuard`, whose module
docstring argues the behaviour.

What keeps a hold is the domains failing now whose failure began with
the storm (at most one window before it tripped) or since; the state of
their journal record does not matter. A domain failing since before the
storm (REPORTED and never recovered, or in ``observe`` mode, for hours)
says nothing about the host today: it neither trips the guard nor keeps
it holding. One that went REPORTED or is in ``observe`` mode and failed
*with* the storm is as much a sign of the sick host as the others (the
first guests of a slow storm are often reported before it trips; a host
of observe-mode guests must still be held for its others) and counts,
until ``max_hold``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Collection, Mapping

from masakarimonitors_iim.journal.machine import Record, State


@dataclasses.dataclass(frozen=True)
class StormSettings:
    """When the guard trips; the defaults are argued in doc/source/operations.rst
    ("Many guests failing at once").

    ``min_domains`` of 0 turns the guard off.
    """

    min_domains: int = 3
    ratio: float = 0.5
    window: float = 120.0
    #: seconds after which a hold releases by itself, storm or not
    max_hold: float = 1800.0


@dataclasses.dataclass(frozen=True)
class StormState:
    """Where the guard stands; times are wall times."""

    holding: bool = False
    #: when it tripped (holding) or last cleared (not holding); 0: never
    since: float = 0.0
    #: holding, but below the trip condition since then; None otherwise
    calm_since: float | None = None
    #: failing and watched domains at the last evaluation; while holding,
    #: only those that keep the hold (see :func:`counts`)
    failing: int = 0
    watched: int = 0
    #: the last release after ``max_hold``: failures that began at or
    #: before it never trip the guard again; 0: never released
    released: float = 0.0


def needed(watched: int, settings: StormSettings) -> int:
    """Failing domains that trip the guard on a host watching ``watched``:
    both the absolute minimum and the share. The small epsilon keeps
    0.3 x 10 from becoming 4 through floating point."""
    return max(settings.min_domains, math.ceil(settings.ratio * watched - 1e-9))


def trips(failing: int, watched: int, settings: StormSettings) -> bool:
    if settings.min_domains <= 0 or watched <= 0:
        return False
    return failing >= needed(watched, settings)


@dataclasses.dataclass(frozen=True)
class Failing:
    """One domain's current failure streak, as the guard saw it (wall times)."""

    #: its first FAILED verdict since it was last HEALTHY: when it began
    began: float
    #: its last FAILED verdict
    last: float
    #: a verdict since the last FAILED was UNKNOWN (paused, libvirt down)
    silent: bool = False


@dataclasses.dataclass(frozen=True)
class Counts:
    """The watched failing domains, three ways (see :func:`counts`)."""

    #: failing now
    failing: int
    #: began within the window, after the last release: these trip
    recent: int
    #: began at or after a given time (the storm's start): these keep a hold
    lasting: int


def counts(domains: Mapping[str, Failing], watched: Collection[str], now: float,
           window: float, released: float = 0.0,
           storm_began: float = -math.inf) -> Counts:
    """The watched failing domains at ``now``.

    A domain whose latest verdict is FAILED counts however long ago that
    round was (a backlog of hung guests may probe it less often than the
    interval); one that went silent (UNKNOWN) counts until its last
    failure is older than the window. Both ``recent`` and ``lasting``
    leave out failures that began at or before ``released`` (released
    once already); ``lasting`` also those that began before
    ``storm_began``.
    """
    current = [f for uuid, f in domains.items()
               if uuid in watched and (not f.silent or now - f.last <= window)]
    return Counts(failing=len(current),
                  recent=sum(1 for f in current
                             if now - f.began <= window and f.began > released),
                  lasting=sum(1 for f in current
                              if f.began >= storm_began and f.began > released))


def step(state: StormState, c: Counts, watched: int, now: float,
         settings: StormSettings) -> StormState:
    """The next state.

    Trips on failures that *began* within one window (and after the last
    release): a domain failing for days (reported, or watched in observe
    mode) says nothing about the host today, and must not add to two new
    independent failures; nor may a failure already released trip again.
    Holds while the domains failing *now* whose failure began with the
    storm or since (``c.lasting``) still meet the condition, so a storm
    that lasts keeps holding after its window; clears only after a whole
    window below it (hysteresis), so a storm whose domains flicker
    between failed and unknown does not trip and clear, and log, every
    round; and releases after ``max_hold`` whatever the count, marking
    the release so that its failures cannot trip it again.
    """
    if not state.holding:
        if trips(c.recent, watched, settings):
            return StormState(True, now, None, c.lasting, watched, state.released)
        return StormState(False, state.since, None, c.failing, watched, state.released)
    if settings.min_domains <= 0:        # turned off: nothing to wait for
        return StormState(False, now, None, c.failing, watched, state.released)
    if now - state.since >= settings.max_hold:
        return StormState(False, now, None, c.failing, watched, released=now)
    if trips(c.lasting, watched, settings):
        return StormState(True, state.since, None, c.lasting, watched, state.released)
    if state.calm_since is None:
        return StormState(True, state.since, now, c.lasting, watched, state.released)
    if now - state.calm_since >= settings.window:
        return StormState(False, now, None, c.failing, watched, state.released)
    return StormState(True, state.since, state.calm_since, c.lasting, watched,
                      state.released)


def counted(rec: Record | None) -> bool:
    """Whether a domain's failures count toward a storm, from its journal
    record: only a domain proven healthy in its current boot, whose
    failures can lead to a report. A guest booting, or one without a
    working agent (DISCOVERY, FAILED "not connected" every round), is no
    sign of a sick host; counted, a host full of guests without qemu-ga
    would trip the guard at every start of the monitor."""
    return rec is not None and rec.state in (State.HEALTHY, State.FAILING, State.REPORTED)
