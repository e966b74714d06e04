"""The scheduler: its thread, its life cycle, and the parts it joins.

Data flows one way: libvirt events and the domain list (made on the
:class:`Lister`'s thread) feed the :class:`Registry`; the
:class:`Schedule` says which rounds are due and may take an agent slot
(healthy and suspect domains in separate lanes); those go to the workers
as frozen round specs, run by the :class:`Prober`; outcomes come back in
batches and are applied on the scheduler thread alone, by the
:class:`Applier` through the :class:`JournalWriter` (so journal writes
never race); the sender delivers what it queued. A wake-up costs the rounds it starts and the
outcomes it applies, never a pass over every domain.
"""
from __future__ import annotations

import random
import threading
from typing import Any, Callable

from oslo_log import log as logging

from masakarimonitors_iim import status
from masakarimonitors_iim.common.backoff import next_delay
from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.guards.activity import ActivityGuard
from masakarimonitors_iim.guards.storm import StormGuard, counted
from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import DomainInfo, EventKind, LifecycleEvent
from masakarimonitors_iim.monitor.apply import Applier
from masakarimonitors_iim.monitor.dispatch import Dispatcher
from masakarimonitors_iim.monitor.jobs import JobQueue
from masakarimonitors_iim.monitor.lister import Inventory
from masakarimonitors_iim.monitor.lock import JournalLock
from masakarimonitors_iim.monitor.metrics import Metrics
from masakarimonitors_iim.monitor.registry import STOP_EVENTS, Registry
from masakarimonitors_iim.monitor.results import JournalWriter, trust_guards
from masakarimonitors_iim.monitor.settings import Settings, load_policy_file
from masakarimonitors_iim.monitor.systemd import SystemdNotifier
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.outbox.sender import Sender
from masakarimonitors_iim.prober import Prober
from masakarimonitors_iim.workers import WorkerPool

LOG = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
#: Back-off after a failed scheduler iteration (a job whose journal write
#: failed is retried then): from 1 s, doubling, at most this.
RETRY_MAX_INTERVAL = 5.0
#: Before the first listing, wait this long (in steps of FIRST_CONNECT_STEP)
#: for libvirt's first connection, so a start is not greeted by a warning
#: that libvirt is unreachable when it was merely not asked yet.
FIRST_CONNECT_WAIT = 3.0
FIRST_CONNECT_STEP = 0.1
#: The longest sleep: the systemd watchdog is pinged from the loop.
MAX_SLEEP = 1.0


class Monitor:
    """The introspective instance monitor: start(), then stop() or reload()."""

    def __init__(self, settings: Settings, *, hypervisor: HypervisorAPI, db: Database,
                 notifier: Notifier, pool: WorkerPool,
                 clock: Callable[[], float], wall: Callable[[], float],
                 spread: Callable[[], float] = random.random,
                 prober: Prober | None = None, metrics: Metrics | None = None,
                 systemd: SystemdNotifier | None = None,
                 journal_lock: JournalLock | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self._hv = hypervisor
        self._db = db
        self._pool = pool
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.jobs = JobQueue(self._wake)
        self.storm = StormGuard(settings.storm, watched=lambda: self.registry.watched.keys(),
                                counts_for=lambda uuid: counted(self.results.record(uuid)),
                                on_change=lambda holding: self.metrics.storm(holding))
        self.activity = ActivityGuard(window=settings.activity_window, clock=clock)
        self.results = JournalWriter(db, hostname=settings.hostname,
                                     event=settings.notification_event,
                                     on_queued=lambda: self.sender.wake(), wall=wall,
                                     guards=[self.storm, self.activity])
        self.sender = Sender(self.results.outbox, notifier,
                             retry_interval=settings.retry_interval,
                             retry_max=settings.retry_max,
                             max_backoff=settings.max_retry_interval,
                             duplicate_window=settings.duplicate_window,
                             hostname=settings.hostname, clock=wall)
        self._prober = prober or Prober(hypervisor, clock)
        self.registry = Registry(
            settings, hypervisor=hypervisor, results=self.results,
            cleanup=lambda job: self.dispatch.run_cleanup(job),
            policy_file=load_policy_file(settings.policy_file, initial=True),
            clock=clock, spread=spread)
        self.results.guards = trust_guards(self.registry.policy_of, self.results,
                                           self.results.guards)
        self.inventory = Inventory(hypervisor, interval=settings.defaults.interval,
                                   clock=clock, post=self.jobs.post, sync=self._synced)
        self._prune_due = 0.0
        self._thread: threading.Thread | None = None
        self._loop_trouble = LogOnce(LOG)
        self._journal_lock = journal_lock
        self.metrics = metrics or Metrics(db, hypervisor, wall=wall)
        self.dispatch = Dispatcher(settings.probe_workers, pool=pool, prober=self._prober,
                                   clock=clock, wake=self._wake, logger=LOG,
                                   set_metrics=self.metrics.backlog,
                                   disconnect_grace=settings.disconnect_grace,
                                   spread=spread)
        self.apply = Applier(registry=self.registry, results=self.results,
                             metrics=self.metrics, activity=self.activity,
                             disconnect_grace=settings.disconnect_grace,
                             clock=clock, wall=wall)
        self._systemd = systemd or SystemdNotifier(None)

    # -- life cycle ---------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        LOG.info("starting: host %s, libvirt %s, journal %s, %d agent slots "
                 "(probe_workers; at most %d for domains not healthy)",
                 s.hostname, s.libvirt_uri, s.journal_path, s.probe_workers,
                 self.dispatch.schedule.suspect_slots)
        if s.sock_path_set:
            LOG.warning("[introspectiveinstancemonitor] qemu_guest_agent_sock_path is set "
                        "but not used: domains are found by their agent channel name")
        self.sender.start()
        self._pool.start()
        self._hv.start()
        self.inventory.lister.start()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()
        self.metrics.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop everything within ``timeout`` seconds. SIGTERM allows 5;
        threads stuck in a hung libvirtd cannot be interrupted and are left
        behind (daemons), so the budget keeps a second for the process to
        exit."""
        if self._stop.is_set():
            return
        self._systemd.stopping()
        if self._thread is None:     # never started: only the journal is open
            self._stop.set()
            self._close_journal()
            return
        LOG.info("stopping")
        deadline = self._clock() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.1, deadline - self._clock()) / 2)
        self.inventory.lister.stop(0.1)
        self.metrics.stop(min(0.5, max(0.1, deadline - self._clock())))
        self.dispatch.stopping()
        for w in list(self.registry.watched.values()):
            self.registry.close_probes(w)   # before libvirt goes: they talk to guests
        self._pool.stop(max(0.1, (deadline - self._clock()) / 2))
        self.sender.stop(max(0.1, (deadline - self._clock()) / 2))
        self._hv.stop(max(0.1, deadline - self._clock()))
        self._close_journal()
        LOG.info("stopped")

    def _close_journal(self) -> None:
        """The database, then its lock: another monitor may open it now."""
        self._db.close()
        if self._journal_lock is not None:
            self._journal_lock.release()

    def reload(self) -> None:
        """SIGHUP: re-read the policy file; an invalid one leaves the
        policy in force unchanged."""
        self.jobs.post_durable(self._apply_reload)

    # -- inputs from other threads ------------------------------------------
    def handle_event(self, event: LifecycleEvent) -> None:
        """Called on libvirt's event thread: only queue, never block it."""
        self.jobs.post_durable(lambda: self._apply_event(event))

    # -- the scheduler thread -----------------------------------------------
    def _loop(self) -> None:
        self.results.recover()
        self._await_first_connection()
        if not self._stop.is_set():
            self._systemd.ready(self._status_line())
        failures = 0
        while not self._stop.is_set():
            try:
                self.step()
                failures = 0
                self._loop_trouble.resolved("scheduler works again")
                # Only a loop that really turns vouches for the monitor: a
                # scheduler that hangs, or fails every iteration, for
                # WatchdogSec gets restarted by systemd.
                self._systemd.watchdog()
                if self._systemd.enabled:   # the line costs more than a round
                    self._systemd.status(self._status_line())
            except Exception as exc:
                # One bad iteration must not stop monitoring. A persistent
                # fault (say, the journal's disk is full) is logged in full
                # once, then only when it changes.
                self._loop_trouble.problem("scheduler iteration failed: %s", exc,
                                           level=logging.ERROR, exc_info=True)
                self._systemd.status("scheduler iteration failed: %s" % exc)
                failures += 1
                self._stop.wait(next_delay(failures, 1.0, RETRY_MAX_INTERVAL))

    def _await_first_connection(self) -> None:
        """Give libvirt's first connection attempt a few seconds, however
        it ends; a stop cuts the wait short."""
        for _ in range(int(FIRST_CONNECT_WAIT / FIRST_CONNECT_STEP)):
            if self._hv.connected or self._stop.wait(FIRST_CONNECT_STEP):
                return

    def _status_line(self) -> str:
        return "domains watched: %d; libvirt %s" % (
            len(self.registry.watched),
            "connected" if self._hv.connected else "not connected")

    def step(self, wait: bool = True) -> None:
        """One scheduler iteration: apply queued results and events, refresh
        the inventory when due, hand due domains to the workers, then sleep
        until something is due (unless ``wait`` is False, for tests)."""
        self._wake.clear()
        # Events and reloads first (one whose journal write failed is held
        # and runs first next time: monitor/jobs.py), then the outcomes (one
        # that cannot be written is dropped: the next round brings a new one).
        self.jobs.run_pending()
        self._apply_outcomes()
        now = self._clock()
        self.inventory.request_if_due(now)
        if now >= self._prune_due:
            self._prune_due = now + PRUNE_EVERY
            self.results.prune()
        if self.dispatch.start_due(now, self.registry.watched):
            self._write_status()        # a backlog began or cleared
        if not wait:
            return
        self._wake.wait(self._sleep_for(now))

    def _sleep_for(self, now: float) -> float:
        """Until the next round is due, the next listing, or (while rounds
        run) the next batch of outcomes; a finishing round a ready one
        waits for, an event or a stop wakes the loop sooner."""
        wake_at = now + MAX_SLEEP
        due = self.dispatch.wake_at(now)
        if due is not None:
            wake_at = min(wake_at, due)
        listing = self.inventory.wake_at()
        if listing is not None:
            wake_at = min(wake_at, listing)
        return max(0.0, wake_at - self._clock())

    # -- inventory -----------------------------------------------------------
    def _synced(self, domains: list[DomainInfo], first: bool) -> None:
        """A listing: (un)watch, mirror the schedule, write the status."""
        # Only the domains found by the first listing are spread.
        self.registry.sync(domains, spread=first)
        self._reschedule_all()
        self._write_status()

    # -- the schedule ----------------------------------------------------------
    def _reschedule(self, uuid: str) -> None:
        rec = self.results.record(uuid)
        self.dispatch.reschedule(uuid, self.registry.watched.get(uuid),
                                 rec.state if rec else None)

    def _reschedule_all(self) -> None:
        """After a listing or a reload (once an interval, not per wake-up)."""
        self.dispatch.forget_unwatched(self.registry.watched)
        for uuid in self.registry.watched:
            self._reschedule(uuid)

    def _apply_outcomes(self) -> None:
        """The batch that came back since the last wake-up. One that cannot
        be written is dropped (the next round brings a fresh one); the
        rest stay queued for the next iteration."""
        for w, generation, outcome in self.dispatch.outcomes():
            try:
                if outcome is not None:
                    self.apply.outcome(w, generation, outcome)
            finally:
                w.in_flight = False
                self._reschedule(w.info.uuid)

    def _apply_event(self, event: LifecycleEvent) -> None:
        LOG.debug("libvirt event %s %s", event.kind.value, event.uuid)
        if event.kind is EventKind.CONNECTION_LOST:
            self.apply.connection_lost(event.detail)
        if event.kind in STOP_EVENTS or event.kind is EventKind.UNDEFINED:
            self.inventory.stopped(event.uuid)
        if self.registry.on_event(event):
            self.inventory.want()
        self._reschedule(event.uuid)

    def _apply_reload(self) -> None:
        new = load_policy_file(self.settings.policy_file, initial=False)
        if new is None and self.settings.policy_file:
            return  # invalid: the previous policy stays in force
        self.registry.reload(new)
        self._reschedule_all()
        self.inventory.want()
        LOG.info("policy reloaded")

    def _write_status(self) -> None:
        path = status.status_path(self.settings.journal_path)
        try:
            status.write_snapshot(path, self.snapshot())
        except OSError as exc:
            LOG.warning("cannot write status file %s: %s", path, exc)

    def snapshot(self) -> dict[str, Any]:
        """What ``masakari-iim status`` shows besides the journal."""
        return dict(self.registry.snapshot(self._wall(), self._clock()),
                    storm=self.storm.snapshot(self._wall()),
                    backlog=self.dispatch.snapshot())

