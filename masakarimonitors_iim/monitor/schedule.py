"""When each domain's next round starts, and on which agent slot: pure.

The scheduler thread owns one :class:`Schedule`. It holds no I/O, no
threads and no clock of its own, so every decision below is a table in
tests/unit/test_schedule.py.

Why two lanes. A healthy guest answers in milliseconds; a hung one holds
an agent slot (one libvirt call) for its whole timeout. In one FIFO, a
healthy guest due behind hung ones waits for them (head-of-line
blocking), and with enough of them it is probed late every interval.
So domains whose last verdict was not HEALTHY go to the *suspect* lane,
which may hold at most ``suspect_slots`` of the ``slots`` (all but one):
the healthy lane always has a slot that a known-hung guest cannot take.
A healthy-lane round still running after ``slow_after`` seconds (a guest
that hung since its last round) counts against the suspect share too,
so the next free slot goes to the healthy lane, not to another suspect.

Why a heap and a ready queue. Each domain has one entry: waiting in its
lane's heap until due, then in its lane's FIFO of ready rounds until a
slot is free. A wake-up costs O(log N) per round started, never a scan
of every domain; entries replaced or cancelled stay in the heap and are
skipped when they surface (lazy deletion). The ready FIFOs are the probe
backlog: rounds due and not started for want of a slot.

Model: kubelet's prober workers keep time apart from work (a ticker per
probe, a fixed period from the schedule, not from when the last probe
ended); oslo.service's FixedIntervalLoopingCall says when a run outlasted
its interval. Here, the next round is due one interval after the *due*
time of the last one (no drift when a wake-up comes early or late), and
a round so late that the next is due already is rescheduled from now
(no burst of catch-up rounds) and shows in the backlog.
"""
from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools

from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.verdict import Verdict

HEALTHY = "healthy"
SUSPECT = "suspect"
LANES = (HEALTHY, SUSPECT)

#: A healthy guest answers ping in ~3 ms; a healthy-lane round still
#: running after this long is treated as a suspect's for slot sharing.
SLOW_AFTER = 0.5


def suspect_slots(slots: int) -> int:
    """The suspect lane's share: every slot but one, so hung guests can
    never take the last slot from healthy ones. With a single slot the
    lanes share it (no reserve is possible); the docs say so."""
    return max(1, slots - 1)


def confirmable(slots: int, interval: float, timeout: float) -> float:
    """Hung guests the suspect lane can probe once per interval: each
    holds a slot for the whole timeout (see doc/source/operations.rst,
    Sizing)."""
    return suspect_slots(slots) * interval / timeout


def lane_for(last_verdict: Verdict | None, journal_state: State | None) -> str:
    """The lane of a domain's next round: its last verdict decides; before
    the first one, the journal (a domain it holds as failing or reported
    starts as a suspect; a new one gets its first round in the healthy
    lane, so a host starting with an empty journal is not all suspects)."""
    if last_verdict is not None:
        return HEALTHY if last_verdict is Verdict.HEALTHY else SUSPECT
    return SUSPECT if journal_state in (State.FAILING, State.REPORTED) else HEALTHY


def next_due(due: float, now: float, interval: float) -> float:
    """One interval after the round's due time, so early or late wake-ups
    never drift the cadence; if the round started so late that this is
    already past, one interval from now (never a burst of catch-ups)."""
    following = due + interval
    return following if following > now else now + interval


@dataclasses.dataclass
class _Entry:
    uuid: str
    due: float
    lane: str
    #: "waiting" (in a heap), "ready" (in a FIFO), "gone" (replaced or
    #: cancelled; skipped when it surfaces)
    where: str = "waiting"


@dataclasses.dataclass(frozen=True)
class Start:
    """A round to start now: the slot is taken until :meth:`Schedule.finished`."""

    uuid: str
    lane: str
    #: when it was due (<= now + slack); its lateness is started - due
    due: float
    #: names this round's slot (a domain unwatched and watched again may
    #: have a new round running before the old one has ended)
    token: int


@dataclasses.dataclass(frozen=True)
class Backlog:
    """Rounds due and not started because no slot of their lane was free."""

    overdue: int = 0
    oldest_seconds: float = 0.0
    by_lane: tuple[tuple[str, int], ...] = ()


class Schedule:
    """Due times and agent slots for the monitored domains.

    ``slots`` is the number of agent calls the monitor may have in flight
    (the ``probe_workers`` option, which also sizes the worker pool and
    the hypervisor's call slots). One round of a domain at a time: a
    domain with a running round is not in the schedule until the round is
    :meth:`finished` and the caller :meth:`put` s it back.
    """

    def __init__(self, slots: int, slow_after: float = SLOW_AFTER) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.suspect_slots = suspect_slots(slots)
        self.slow_after = slow_after
        self._entries: dict[str, _Entry] = {}
        self._heaps: dict[str, list[tuple[float, int, _Entry]]] = {lane: [] for lane in LANES}
        self._ready: dict[str, collections.deque[_Entry]] = {
            lane: collections.deque() for lane in LANES}
        self._ready_count = {lane: 0 for lane in LANES}
        #: token -> (lane, started at) of rounds holding a slot
        self.running: dict[int, tuple[str, float]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uuid: str) -> bool:
        return uuid in self._entries

    def due_of(self, uuid: str) -> float | None:
        entry = self._entries.get(uuid)
        return None if entry is None else entry.due

    # -- the domains ----------------------------------------------------------
    def put(self, uuid: str, due: float, lane: str) -> None:
        """Schedule the domain's next round (replacing one not started)."""
        if lane not in LANES:
            raise ValueError("unknown lane %r" % lane)
        self.cancel(uuid)
        entry = _Entry(uuid, due, lane)
        self._entries[uuid] = entry
        heapq.heappush(self._heaps[lane], (due, next(self._seq), entry))

    def cancel(self, uuid: str) -> None:
        """Forget the domain's next round (unwatched, or rescheduled)."""
        entry = self._entries.pop(uuid, None)
        if entry is None:
            return
        if entry.where == "ready":
            self._ready_count[entry.lane] -= 1
        entry.where = "gone"

    # -- slots ----------------------------------------------------------------
    def take(self, now: float, slack: float = 0.0) -> list[Start]:
        """Start every round due by ``now + slack`` that a free slot of its
        lane allows, healthy lane first (its rounds take milliseconds),
        each lane in due order; the rest stay ready (the backlog)."""
        for lane in LANES:
            heap, ready = self._heaps[lane], self._ready[lane]
            while heap and heap[0][0] <= now + slack:
                entry = heapq.heappop(heap)[2]
                if entry.where == "waiting":
                    entry.where = "ready"
                    ready.append(entry)
                    self._ready_count[lane] += 1
        started = []
        for lane in LANES:
            ready = self._ready[lane]
            while ready and self._free(lane, now):
                entry = ready.popleft()
                if entry.where != "ready":
                    continue
                self._ready_count[lane] -= 1
                del self._entries[entry.uuid]
                entry.where = "gone"
                token = next(self._seq)
                self.running[token] = (lane, now)
                started.append(Start(entry.uuid, lane, entry.due, token))
        return started

    def hold(self, now: float) -> int | None:
        """Take a slot for work that is not a round (closing a probe talks
        to an agent that may hang): from the suspect share, so it never
        takes the healthy lane's last slot. None when no slot is free."""
        if not self._free(SUSPECT, now):
            return None
        token = next(self._seq)
        self.running[token] = (SUSPECT, now)
        return token

    def finished(self, token: int) -> None:
        """The round is over: its slot is free again."""
        self.running.pop(token, None)

    def _free(self, lane: str, now: float) -> bool:
        if len(self.running) >= self.slots:
            return False
        if lane == HEALTHY:
            return True
        return self.suspect_running(now) < self.suspect_slots

    def suspect_running(self, now: float) -> int:
        """Slots held by suspects, or by healthy-lane rounds that have run
        longer than a healthy guest ever takes."""
        return sum(1 for lane, started in self.running.values()
                   if lane == SUSPECT or now - started >= self.slow_after)

    # -- what the scheduler thread asks between wake-ups ------------------------
    def wake_lanes(self, now: float) -> frozenset[str]:
        """The lanes whose finishing round frees a slot that a ready round
        could take: only those wake the scheduler at once (the others are
        applied with the next batch). A slow healthy-lane round counts as
        a suspect's (see :meth:`suspect_running`)."""
        if self._ready_count[HEALTHY]:
            return frozenset(LANES)
        if not self._ready_count[SUSPECT]:
            return frozenset()
        if self.suspect_running(now) >= self.suspect_slots:
            return frozenset((SUSPECT,))
        return frozenset(LANES)

    def uuids(self) -> list[str]:
        return list(self._entries)

    def next_wake(self) -> float | None:
        """The earliest due time still in a heap; None when there is none.
        Ready rounds need no timer: a finishing round frees their slot."""
        best = None
        for heap in self._heaps.values():
            while heap and heap[0][2].where != "waiting":
                heapq.heappop(heap)
            if heap and (best is None or heap[0][0] < best):
                best = heap[0][0]
        return best

    def backlog(self, now: float) -> Backlog:
        """Rounds due and not started, and how long the oldest has waited
        (0 when it is not due yet: ``take`` may have readied it early)."""
        oldest = 0.0
        for ready in self._ready.values():
            while ready and ready[0].where != "ready":
                ready.popleft()
            if ready:
                oldest = max(oldest, now - ready[0].due)
        return Backlog(overdue=sum(self._ready_count.values()), oldest_seconds=oldest,
                       by_lane=tuple((lane, self._ready_count[lane]) for lane in LANES))
