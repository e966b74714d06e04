"""Work handed to the scheduler thread, and work it must not lose.

Other threads (libvirt's event thread, the lister, a SIGHUP) never touch
the monitor's state: they post a job, and the scheduler thread runs the
jobs in order at its next wake-up, so the journal has one writer.

A *durable* job (a libvirt event, a policy reload) that fails because
the journal could not be written ("database is locked", disk full) is
held and run again first at the next iteration, before anything posted
after it: dropping it would lose, say, a restart, and leave a stale
failure streak to report later. Any other failure is not retried: it
would fail again and wedge the scheduler.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

from masakarimonitors_iim.db import DatabaseError


class _Durable:
    def __init__(self, run: Callable[[], None]) -> None:
        self._run = run

    def __call__(self) -> None:
        self._run()


class JobQueue:
    """Jobs for the scheduler thread; posting wakes it."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        #: a durable job whose journal write failed, run again first
        self.held: Callable[[], None] | None = None

    def post(self, job: Callable[[], None]) -> None:
        """Any thread: run ``job`` on the scheduler thread; never blocks."""
        self._queue.put(job)
        self._wake.set()

    def post_durable(self, run: Callable[[], None]) -> None:
        """Like :meth:`post`, for a job that a failed journal write must
        not lose."""
        self.post(_Durable(run))

    def run_pending(self) -> None:
        """Scheduler thread: run what was posted, in order. Raises what a
        job raised; a durable job that failed to write the journal is
        kept and runs first next time."""
        while True:
            job, self.held = self.held, None
            if job is None:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    return
            try:
                job()
            except DatabaseError:
                if isinstance(job, _Durable):
                    self.held = job
                raise
