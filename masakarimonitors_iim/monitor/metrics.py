"""Prometheus metrics, on an optional HTTP endpoint.

Off unless ``[introspectiveinstancemonitor] metrics_port`` is set; it
listens on ``metrics_host`` (127.0.0.1 by default) and serves
``/metrics``. Everything goes to a registry of its own, never
prometheus-client's global one, so a process that loads this monitor
(masakari-monitors) keeps its own metrics apart.

======================================================  =========  ============================
metric                                                  type       meaning
======================================================  =========  ============================
``masakari_iim_domains{state}``                         gauge      journal rows by state:
                                                                   DISCOVERY, HEALTHY,
                                                                   FAILING, REPORTED
``masakari_iim_probe_duration_seconds{probe}``          histogram  one probe's run in a round,
                                                                   by probe type (a probe the
                                                                   guest blocks is not run and
                                                                   not observed)
``masakari_iim_verdicts_total{verdict}``                counter    round verdicts applied:
                                                                   HEALTHY, FAILED, UNKNOWN
``masakari_iim_notifications{status}``                  gauge      outbox rows by status:
                                                                   pending, delivered (kept 7
                                                                   days), dead
``masakari_iim_outbox_pending``                         gauge      notifications not yet
                                                                   delivered (outbox depth)
``masakari_iim_outbox_oldest_pending_age_seconds``      gauge      age of the oldest of them;
                                                                   0 when there is none
``masakari_iim_libvirt_connected``                      gauge      1 while connected to libvirt
``masakari_iim_probe_backlog``                          gauge      probe rounds due and waiting
                                                                   for a free agent slot
``masakari_iim_probe_backlog_oldest_seconds``           gauge      how long the oldest of them
                                                                   has waited; 0 when none
``masakari_iim_rechecks_total``                         counter    healthy guests whose first call
                                                                   went unanswered for 1 s and
                                                                   were probed again at once
                                                                   with the full timeout
``masakari_iim_storm_holding``                          gauge      1 while the storm guard holds
                                                                   this host's notifications
``masakari_iim_journal_readable``                       gauge      0 when the journal database
                                                                   could not be read for this
                                                                   scrape (its gauges are then
                                                                   left out)
======================================================  =========  ============================

Why two ways of collecting: probe latencies and verdicts are events, seen
once when the scheduler applies a round, so they are counted there
(:meth:`Metrics.round_applied`). Domain states and the outbox are state
that the journal database already holds, written by two threads (the
scheduler and the sender); gauges kept beside it would need hooks in
both and could drift from it (after a restart, a prune). They are read
from the database when Prometheus scrapes (two small queries every
15-60 s), so the probe path never pays for them.
"""
from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from oslo_log import log as logging
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.db import Database, DatabaseError
from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.outbox.store import OUTBOX_STATUSES, PENDING, OutboxStore
from masakarimonitors_iim.prober import RoundOutcome
from masakarimonitors_iim.verdict import Verdict

LOG = logging.getLogger(__name__)

PREFIX = "masakari_iim_"

#: A healthy agent answers in a few ms; a hung one costs the whole
#: timeout (2 s by default, up to the policy's).
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                 1.0, 2.0, 5.0, 10.0, 30.0)

#: Seconds a scrape client may stall before its connection is dropped.
CLIENT_TIMEOUT = 10.0


class _StateCollector(Collector):
    """Reads, at scrape time, what the journal database and the
    hypervisor hold now."""

    def __init__(self, db: Database, hypervisor: HypervisorAPI,
                 wall: Callable[[], float], stopping: threading.Event) -> None:
        self._journal = JournalStore(db)
        self._outbox = OutboxStore(db)
        self._hv = hypervisor
        self._wall = wall
        self._stopping = stopping
        self._trouble = LogOnce(LOG)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(PREFIX + "libvirt_connected",
                                "1 while the monitor is connected to libvirt",
                                value=1.0 if self._hv.connected else 0.0)
        try:
            records = self._journal.all()
            entries = self._outbox.rows()
        except DatabaseError as exc:
            if not self._stopping.is_set():   # closed on purpose at stop
                self._trouble.problem("metrics: cannot read the journal database: %s",
                                      one_line(exc))
            yield GaugeMetricFamily(PREFIX + "journal_readable",
                                    "0 when the journal database could not be read",
                                    value=0.0)
            return
        self._trouble.resolved("metrics: the journal database is readable again")
        yield GaugeMetricFamily(PREFIX + "journal_readable",
                                "0 when the journal database could not be read", value=1.0)
        yield from state_families(
            [r.state for r in records],
            [(e.status, e.created_at) for e in entries], self._wall())


def state_families(states: list[State], outbox: list[tuple[str, float]],
                   now: float) -> list[GaugeMetricFamily]:
    """The gauges for journal states and outbox rows ``(status,
    created_at)``; every label value is present, zeros included, so a
    dashboard never sees a series vanish."""
    domains = GaugeMetricFamily(PREFIX + "domains", "Domains in the journal, by state",
                                labels=["state"])
    for state in State:
        domains.add_metric([state.value], float(sum(1 for s in states if s is state)))
    notifications = GaugeMetricFamily(
        PREFIX + "notifications",
        "Notifications in the outbox, by status (delivered ones are pruned after 7 days)",
        labels=["status"])
    for status in OUTBOX_STATUSES:
        notifications.add_metric([status], float(sum(1 for s, _ in outbox if s == status)))
    pending = [created for status, created in outbox if status == PENDING]
    depth = GaugeMetricFamily(PREFIX + "outbox_pending",
                              "Notifications not yet delivered to Masakari",
                              value=float(len(pending)))
    age = GaugeMetricFamily(PREFIX + "outbox_oldest_pending_age_seconds",
                            "Age of the oldest notification not yet delivered; 0 if none",
                            value=max(0.0, now - min(pending)) if pending else 0.0)
    return [domains, notifications, depth, age]


class _Handler(WSGIRequestHandler):
    #: a client that connects and stalls cannot hold a thread for ever
    timeout = CLIENT_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass   # one line per scrape would drown the monitor's own log


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Metrics:
    """The monitor's metrics and their endpoint.

    Always there (observing costs a histogram bucket per probe); the
    endpoint only listens when ``port`` is not 0.
    """

    def __init__(self, db: Database, hypervisor: HypervisorAPI, *,
                 wall: Callable[[], float], host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._probe_seconds = Histogram(
            PREFIX + "probe_duration_seconds",
            "Time one probe took in a round, by probe type",
            ["probe"], buckets=PROBE_BUCKETS, registry=self.registry)
        self._verdicts = Counter(
            PREFIX + "verdicts", "Round verdicts applied by the scheduler, by verdict",
            ["verdict"], registry=self.registry)
        # The labelled children, looked up once: labels() costs more than
        # the increment, once per round.
        self._verdict_count = {verdict: self._verdicts.labels(verdict.value)
                               for verdict in Verdict}
        self._probe_seconds_by_name: dict[str, Any] = {}
        self._backlog = Gauge(
            PREFIX + "probe_backlog",
            "Probe rounds due and waiting for a free agent slot (probe_workers)",
            registry=self.registry)
        self._backlog_oldest = Gauge(
            PREFIX + "probe_backlog_oldest_seconds",
            "Seconds the oldest probe round waiting for an agent slot has waited; 0 if none",
            registry=self.registry)
        self._rechecks = Counter(
            PREFIX + "rechecks",
            "Healthy guests whose first agent call went unanswered for 1 s and were probed "
            "again at once with the full timeout (no failure counted)",
            registry=self.registry)
        self._storm = Gauge(
            PREFIX + "storm_holding",
            "1 while the storm guard holds this host's notifications (many domains failing)",
            registry=self.registry)
        self.registry.register(_StateCollector(db, hypervisor, wall, self._stopping))

    def round_applied(self, outcome: RoundOutcome, verdict: Verdict) -> None:
        """Count one round the scheduler applied, with the verdict it
        applied (a disconnect grace may have turned the prober's FAILED
        into UNKNOWN)."""
        self._verdict_count[verdict].inc()
        for run in outcome.probes:
            if not run.skipped:
                seconds = self._probe_seconds_by_name.get(run.name)
                if seconds is None:
                    seconds = self._probe_seconds_by_name[run.name] = (
                        self._probe_seconds.labels(run.name))
                seconds.observe(run.seconds)

    def recheck(self) -> None:
        """A healthy-lane round ended unanswered (probes/first_call.py)."""
        self._rechecks.inc()

    def backlog(self, overdue: int, oldest_seconds: float) -> None:
        """Set by the scheduler when its backlog changes (an event it
        sees, unlike the journal's state, so kept here like the verdicts)."""
        self._backlog.set(overdue)
        self._backlog_oldest.set(oldest_seconds)

    def storm(self, holding: bool) -> None:
        """Set by the storm guard when it trips or clears."""
        self._storm.set(1 if holding else 0)

    def start(self) -> bool:
        """Listen, if a port is configured; True when the endpoint runs.

        A port in use or an address not of this host costs the metrics,
        never the monitoring: one ERROR line, and the monitor goes on.
        """
        if not self.port or self._server is not None:
            return self._server is not None
        where = ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)
        try:
            server: _Server | None = self._listen()
        except OSError as exc:
            server, error = None, one_line(exc)
        if server is None:
            # Logged outside the except block: oslo.log would append the
            # exception a second time.
            LOG.error("metrics endpoint off: cannot listen on %s: %s; change "
                      "[introspectiveinstancemonitor] metrics_host or metrics_port "
                      "(0 turns metrics off)", where, error)
            return False
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                         name="metrics", daemon=True).start()
        LOG.info("metrics endpoint on http://%s/metrics", where)
        return True

    def _listen(self) -> _Server:
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        server_class = type("_Server", (_Server,), {"address_family": family})
        return make_server(self.host, self.port, make_wsgi_app(self.registry),
                           server_class, handler_class=_Handler)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop listening; idempotent. A scrape still being answered may
        finish on its own daemon thread."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        # shutdown() waits without a timeout for serve_forever to notice
        # (within its poll interval); a helper keeps that wait bounded.
        stopper = threading.Thread(target=server.shutdown, name="metrics-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        server.server_close()
