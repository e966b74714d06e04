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

What trips, keeps and clears a hold is decided in :mod:`.storm_rules`
(pure, table-tested); :class:`StormGuard` only keeps when each domain's
failure began and last showed, and logs the transitions. The decision's
names are re-exported here for the modules that import them from this
one.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging as std_logging
import math
from typing import Any, Callable, Collection

from oslo_log import log as logging

from masakarimonitors_iim.guards.storm_rules import (
    Counts,
    Failing,
    StormSettings,
    StormState,
    counted,
    counts,
    needed,
    step,
    trips,
)
from masakarimonitors_iim.verdict import ProbeResult, Verdict

__all__ = ["Counts", "Failing", "StormGuard", "StormSettings", "StormState", "counted",
           "counts", "needed", "step", "trips"]

LOG = logging.getLogger(__name__)


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
