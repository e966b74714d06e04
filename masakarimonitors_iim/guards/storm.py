"""The storm guard: hold reports while much of this host fails at once.

When a large share of one host's guests fail together, the cause is
almost never the guests: it is the host, libvirt or the storage they
share. Restarting them all fixes nothing (Masakari restarts them on the
same host, adding load to a sick one) and buries the one alert that
matters under dozens of notifications. So while the storm lasts, due
reports are held (the domains stay FAILING, see :mod:`.base`), one
CRITICAL line says what to check, status shows it, and it clears by
itself once fewer domains fail for a whole window: a domain still
failing is then reported on its next failed round, one that recovered
never.

A hold is bounded (``max_hold``, ``storm_max_hold``): a storm whose
cause went away can leave enough guests hung for good (10 hang on a
storage stall, 5 recover when it returns, 5 need a reset) to meet the
condition forever, and a verdict cannot tell "still hung because the
host is sick" from "hung since, for good". After ``max_hold`` the guard
releases the held reports with one CRITICAL line, and the failures it
released can never trip it again: only failures that *began* after the
release count toward a new storm.

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

The decision is pure (:func:`needed`, :func:`counts`, :func:`step`,
:func:`counted`) and table-tested; :class:`StormGuard` only keeps when
each domain's failure began and last showed, and logs the transitions.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging as std_logging
import math
from typing import Any, Callable, Collection, Mapping

from oslo_log import log as logging

from masakarimonitors_iim.journal.machine import Record, State
from masakarimonitors_iim.verdict import ProbeResult, Verdict

LOG = logging.getLogger(__name__)


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


def _utc(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(
        timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class StormGuard:
    """The :class:`~masakarimonitors_iim.guards.base.Guard` for host-wide
    failure. ``watched`` gives the uuids monitored right now (the
    registry's), so the share is of this host's monitored domains and a
    domain that stopped or went away never counts, whether or not
    :meth:`forget` was called for it; ``counts_for`` says whether a
    domain's failures count at all (see :func:`counted`). Scheduler
    thread only."""

    name = "storm"

    def __init__(self, settings: StormSettings,
                 watched: Callable[[], Collection[str]],
                 counts_for: Callable[[str], bool] = lambda uuid: True,
                 on_change: Callable[[bool], None] | None = None,
                 logger: Any = LOG) -> None:
        self.settings = settings
        self._watched = watched
        self._counts_for = counts_for
        self._on_change = on_change
        self._log = logger
        self._failing: dict[str, Failing] = {}
        self._evaluated_at = -math.inf
        self.state = StormState()

    # -- the Guard protocol ---------------------------------------------------
    def note(self, uuid: str, result: ProbeResult, now: float) -> None:
        before = len(self._failing)
        f = self._failing.get(uuid)
        if result.verdict is Verdict.HEALTHY or not self._counts_for(uuid):
            self._failing.pop(uuid, None)
        elif result.verdict is Verdict.FAILED:
            began = f.began if f is not None else now
            self._failing[uuid] = Failing(began=began, last=now)
        elif f is not None and not f.silent:
            self._failing[uuid] = dataclasses.replace(f, silent=True)
        # Counting is linear in the domains and note() runs for each of
        # them every round: count again only when the failing set changed,
        # or a second has passed (for the window and the hysteresis).
        if len(self._failing) != before or abs(now - self._evaluated_at) >= 1.0:
            self.update(now)

    def hold(self, uuid: str, name: str, result: ProbeResult, now: float) -> str | None:
        # note() has just counted this verdict; in a storm every domain
        # asks each round, so the state of the last second is good enough.
        if abs(now - self._evaluated_at) >= 1.0:
            self.update(now)
        if not self.state.holding:
            return None
        return ("storm guard: %d of %d domains of this host failing (holding since %s, "
                "until %s at the latest); the host, libvirt or storage is the likely cause"
                % (self.state.failing, self.state.watched, _utc(self.state.since),
                   _utc(self.state.since + self.settings.max_hold)))

    def forget(self, uuid: str) -> None:
        self._failing.pop(uuid, None)

    # -- for the monitor ------------------------------------------------------
    def update(self, now: float) -> StormState:
        """Evaluate the condition now; logs a trip or a clear, once."""
        self._evaluated_at = now
        watched = self._watched()
        window = self.settings.window
        # Bounded by the watched domains: drop the gone and the long silent.
        for uuid in [u for u, f in self._failing.items()
                     if u not in watched or (f.silent and now - f.last > window)]:
            del self._failing[uuid]
        old = self.state
        storm_began = (old.since if old.holding else now) - window
        c = counts(self._failing, watched, now, window, old.released, storm_began)
        self.state = step(old, c, len(watched), now, self.settings)
        if self.state.holding and not old.holding:
            self._log.log(
                std_logging.CRITICAL,
                "storm guard tripped: %d of %d monitored domains began failing within "
                "%d s (trips at %d); holding every notification of this host: the cause "
                "is likely the host, libvirt or storage, not the guests; check libvirtd, "
                "the storage backends and the host's load; notifications resume by "
                "themselves once fewer domains fail for %d s, or after %d s at the latest",
                c.recent, self.state.watched, window,
                needed(self.state.watched, self.settings), window,
                self.settings.max_hold)
        elif self.state.released != old.released:
            self._log.log(
                std_logging.CRITICAL,
                "storm guard released after %d s (storm_max_hold): releasing the held "
                "reports now although %d of %d monitored domains are still failing "
                "(%d trip it): guests hung by a host fault that has passed stay hung "
                "until reset, and holding longer would leave real failures running; "
                "domains still failing are reported on their next failed round; these "
                "failures cannot trip the guard again, only ones that begin from now",
                int(now - old.since), c.lasting, self.state.watched,
                needed(self.state.watched, self.settings))
        elif old.holding and not self.state.holding:
            self._log.log(
                std_logging.WARNING,
                "storm guard cleared after %d s: %d of %d monitored domains failing "
                "now; domains still failing are reported on their next failed round",
                int(now - old.since), self.state.failing, self.state.watched)
        if self.state.holding != old.holding and self._on_change is not None:
            self._on_change(self.state.holding)
        return self.state

    def snapshot(self, now: float) -> dict[str, Any]:
        """For ``masakari-iim status`` (status/model.py reads it)."""
        state = self.update(now)
        return {"enabled": self.settings.min_domains > 0,
                "holding": state.holding,
                "since": state.since or None,
                "calm_since": state.calm_since,
                "failing": state.failing,
                "watched": state.watched,
                "needed": needed(state.watched, self.settings),
                "window": self.settings.window,
                "max_hold": self.settings.max_hold,
                "releases_at": (state.since + self.settings.max_hold
                                if state.holding else None)}
