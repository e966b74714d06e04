"""A fixed set of daemon worker threads fed from a queue.

Not concurrent.futures: its workers are joined at interpreter exit, so a
probe stuck in a guest call could hold up a SIGTERM. Daemon threads let
the monitor stop within its deadline; every probe call is bounded by its
own timeout anyway.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, size: int, name: str = "probe") -> None:
        # SimpleQueue: nothing here needs Queue's bound or join, and its
        # hand-off costs less, once per probe round.
        self._queue: queue.SimpleQueue[tuple[Callable[[], None], bool] | None] = (
            queue.SimpleQueue())
        self._threads = [threading.Thread(target=self._work, name="%s-%d" % (name, i),
                                          daemon=True)
                         for i in range(size)]
        self._stopping = threading.Event()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, job: Callable[[], None], cleanup: bool = False) -> None:
        """Queue ``job``. Once stopping, probe jobs still queued are
        dropped; ``cleanup`` jobs (releasing what a probe left in a guest)
        still run while the stop deadline allows."""
        self._queue.put((job, cleanup))

    def stop(self, timeout: float) -> None:
        """Stop taking jobs and wait up to ``timeout`` for running ones."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, cleanup = item
            if self._stopping.is_set() and not cleanup:
                continue
            try:
                job()
            except Exception:  # a job must never kill its worker
                LOG.exception("worker job failed")
