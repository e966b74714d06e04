"""Starting due rounds on free agent slots, and collecting what they found.

The scheduler thread's half of probing, kept apart from what a verdict
changes (:mod:`monitor.service`): it mirrors each watched domain's next
round into the pure :class:`Schedule`, starts the rounds a free slot of
their lane allows on the worker pool, and hands the outcomes back in
batches. Workers only append an outcome and, when a ready round waits
for the slot they free, wake the scheduler; everything else runs on the
scheduler thread.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Iterator, Mapping, Protocol

from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.monitor.backlog import BacklogWatch
from masakarimonitors_iim.monitor.domains import Watched
from masakarimonitors_iim.monitor.schedule import (
    HEALTHY, SUSPECT, Schedule, lane_for, next_due)
from masakarimonitors_iim.prober import Prober, RoundOutcome

#: Rounds due within this many seconds start together (early, never
#: late), and outcomes are applied at least this often while rounds run:
#: the scheduler wakes per batch, not per round.
BATCH = 0.05


class _Pool(Protocol):
    def submit(self, job: Callable[[], None], cleanup: bool = False) -> None: ...


class Dispatcher:
    def __init__(self, slots: int, *, pool: _Pool, prober: Prober,
                 clock: Callable[[], float], wake: threading.Event, logger: Any,
                 set_metrics: Callable[[int, float], None], disconnect_grace: float,
                 spread: Callable[[], float]) -> None:
        self.schedule = Schedule(slots)
        self.backlog = BacklogWatch(logger, slots=slots,
                                    suspect_slots=self.schedule.suspect_slots,
                                    set_metrics=set_metrics)
        self._pool = pool
        self._prober = prober
        self._clock = clock
        self._wake = wake
        self._grace = disconnect_grace
        self._spread = spread
        # (watched, generation, outcome or None, slot token): appended by
        # workers, taken by the scheduler in batches.
        self._outcomes: collections.deque[
            tuple[Watched, int, RoundOutcome | None, int]] = collections.deque()
        # Lanes whose finishing round should wake the scheduler at once;
        # read by workers.
        self._wake_lanes: frozenset[str] = frozenset()
        # Clean-up jobs waiting for a slot (scheduler thread), and the
        # slot tokens of those that ended (appended by workers).
        self._cleanups: collections.deque[Callable[[], None]] = collections.deque()
        self._cleaned: collections.deque[int] = collections.deque()
        self._stopping = False

    # -- mirroring the watched domains -------------------------------------------
    def reschedule(self, uuid: str, w: Watched | None, state: State | None) -> None:
        """Mirror one domain's next round: the registry and events set
        ``Watched.next_due``; a round in flight is put back when its
        outcome is taken. ``state`` is its journal state."""
        if w is None:
            self.schedule.cancel(uuid)
        elif w.in_flight:
            return
        elif w.recheck_at is not None:
            # A quick first call went unanswered: decide in the suspect
            # lane, at once, with the full timeout.
            if self.schedule.due_of(uuid) != w.recheck_at:
                self.schedule.put(uuid, w.recheck_at, SUSPECT)
        elif self.schedule.due_of(uuid) != w.next_due:
            lane = lane_for(w.last_result.verdict if w.last_result else None, state)
            self.schedule.put(uuid, w.next_due, lane)

    def forget_unwatched(self, watched: Mapping[str, Watched]) -> None:
        for uuid in self.schedule.uuids():
            if uuid not in watched:
                self.schedule.cancel(uuid)

    # -- clean-up jobs ---------------------------------------------------------
    def run_cleanup(self, job: Callable[[], None]) -> None:
        """Run ``job`` (releasing what a probe left in a guest) on a worker
        once a slot of the suspect share is free: it talks to an agent, so
        it holds an agent slot like a round, and rounds must not find the
        slot they were promised taken. Once stopping, at once."""
        if self._stopping:
            self._pool.submit(job, cleanup=True)
            return
        self._cleanups.append(job)
        if self._stopping:      # stopping() ran meanwhile: do not strand it
            self.stopping()

    def stopping(self) -> None:
        """The scheduler thread has ended: clean-ups no longer wait for a
        slot (the pool runs them while the stop deadline allows)."""
        self._stopping = True
        while True:
            try:    # a scheduler thread that outlived its join may pop too
                job = self._cleanups.popleft()
            except IndexError:
                return
            self._pool.submit(job, cleanup=True)

    def _start_cleanups(self, now: float) -> None:
        while True:
            try:    # popped first: stopping() may drain the queue meanwhile
                job = self._cleanups.popleft()
            except IndexError:
                return
            token = self.schedule.hold(now)
            if token is None:
                self._cleanups.appendleft(job)
                return

            def slotted(job: Callable[[], None] = job, token: int = token) -> None:
                try:
                    job()
                finally:
                    self._cleaned.append(token)
                    self._wake.set()
            self._pool.submit(slotted, cleanup=True)

    # -- rounds ----------------------------------------------------------------
    def start_due(self, now: float, watched: Mapping[str, Watched]) -> bool:
        """Start what is due and has a slot; True when a backlog began or
        cleared."""
        self._start_cleanups(now)
        for start in self.schedule.take(now, BATCH):
            w = watched.get(start.uuid)
            if w is None or w.in_flight:     # cannot happen: the schedule mirrors
                self.schedule.finished(start.token)
                continue
            w.in_flight = True
            quick = start.lane == HEALTHY
            if w.recheck_at is not None:
                # An extra round: the cadence (next_due) stays, so the
                # failure streak and the detection bound do not move; one
                # that waited past the next due time stands for that round.
                w.recheck_at = None
                quick = False
                if now >= w.next_due:
                    w.next_due = next_due(w.next_due, now, w.policy.interval)
            elif w.last_result is None:
                # The first round of this watch or boot: the next one comes
                # at a random point of the second half of the interval, so
                # domains first probed together (a new host, a fresh journal)
                # do not stay one burst every interval, where a few hung
                # guests would hold every slot at once; not sooner, so the
                # second rounds do not queue behind the first ones.
                w.next_due = now + w.policy.interval * (1.0 - self._spread() / 2)
            else:
                w.next_due = next_due(start.due, now, w.policy.interval)
            self._pool.submit(self._job(w, start.lane, start.token, quick))
        self._wake_lanes = self.schedule.wake_lanes(now)
        return self.backlog.update(self.schedule.backlog(now), now)

    def _job(self, w: Watched, lane: str, token: int, quick: bool) -> Callable[[], None]:
        """The job carries a frozen spec and the generation, so a restart
        or a policy reload while it runs cannot mix two rounds."""
        spec = w.round_spec(self._grace, quick)
        generation = w.generation
        slow_after = self.schedule.slow_after

        def job() -> None:
            started = self._clock()
            outcome = None
            try:
                outcome = self._prober.run(spec)
            finally:
                # Always, so the slot is freed when the batch is taken.
                self._outcomes.append((w, generation, outcome, token))
                slow = lane == SUSPECT or self._clock() - started >= slow_after
                if (SUSPECT if slow else lane) in self._wake_lanes:
                    self._wake.set()
        return job

    def outcomes(self) -> Iterator[tuple[Watched, int, RoundOutcome | None]]:
        """The rounds that ended since the last batch, their slots freed.
        Taken one by one: what is left when the caller stops (a journal
        write failed) stays for the next batch."""
        while self._cleaned:
            self.schedule.finished(self._cleaned.popleft())
        while self._outcomes:
            w, generation, outcome, token = self._outcomes.popleft()
            self.schedule.finished(token)
            yield w, generation, outcome

    def wake_at(self, now: float) -> float | None:
        """When the scheduler must look again for rounds: the next due
        time, or the next batch of outcomes while rounds run; None if
        neither (a finishing round a ready one waits for wakes it)."""
        due = self.schedule.next_wake()
        if self.schedule.running or self._outcomes or self._cleaned:
            due = now + BATCH if due is None else min(due, now + BATCH)
        return due

    def snapshot(self) -> dict[str, Any]:
        return self.backlog.snapshot()
