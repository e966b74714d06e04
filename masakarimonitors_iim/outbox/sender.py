"""The outbox sender: delivers queued notifications until Masakari has them.

It runs in its own thread so a slow or unreachable Masakari never delays a
probe round, and it reads its work from the outbox in the monitor's
database, so whatever was pending when the process died is delivered
after the restart.

Unlike upstream masakari-monitors, which marks a notification sent after
``retry_max`` failed attempts and so silently loses it, this sender never
gives up on a retryable failure: ``retry_max`` only decides when the
operator is told, once, that delivery is overdue. A configuration error
(this host unknown to Masakari, credentials, a wrong endpoint) is retried
too, and said loudly. Only Masakari refusing the notification itself ends
in a dead letter, which stays in the database and in status output until
an operator re-queues it.

Delivered means Masakari answered with the notification it stored (its
uuid is kept, and :mod:`~masakarimonitors_iim.outbox.follow` follows it to
its end); delivery is never inferred, and a 409 duplicate is settled by
asking Masakari (:mod:`~masakarimonitors_iim.outbox.duplicates`). Every
attempt is recorded durably before it is sent
(``OutboxStore.begin_attempt``), so one cut short by a crash counts.

Back-off protects Masakari from load, not from an answer: while the last
attempt of a row reached nothing (connection refused, a gateway's 503),
a cheap probe (``Notifier.reachable``) asks every ``retry_interval``
whether the API is back, and when it is those rows are sent at once
(:mod:`~masakarimonitors_iim.outbox.reach` says which rows and when).
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import random
import threading
import time

from oslo_log import log as logging

from masakarimonitors_iim.common.backoff import next_delay
from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.notifier.base import DeliveryOutcome
from masakarimonitors_iim.notifier.base import DeliveryStatus as S
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.outbox import duplicates
from masakarimonitors_iim.outbox.follow import Follower
from masakarimonitors_iim.outbox.reach import Reach
from masakarimonitors_iim.outbox.store import DEAD
from masakarimonitors_iim.outbox.store import DELIVERED
from masakarimonitors_iim.outbox.store import OutboxEntry
from masakarimonitors_iim.outbox.store import OutboxStore

LOG = logging.getLogger(__name__)

#: Longest idle wait between outbox scans when nothing wakes the sender;
#: a safety net, since whoever queues a row is expected to call wake().
POLL_INTERVAL = 1.0

#: Entries fetched per scan; more are picked up on the next scan.
BATCH = 50

#: Longest error text kept in the outbox row.
MAX_DETAIL = 1000

#: Masakari's ``duplicate_notification_detection_interval`` default (seconds).
DUPLICATE_WINDOW = 180.0

#: Seconds added to the notifier's attempt timeout when a row is leased.
LEASE_MARGIN = 5.0


class Sender:
    """Owns the delivery thread; everything else only calls :meth:`wake`.

    ``duplicate_window`` is Masakari's
    ``duplicate_notification_detection_interval``. ``hostname``, when
    given, is this host's name now: a pending row queued under another
    name (Masakari did not know it, and the operator fixed ``[DEFAULT]
    hostname``) is sent under this one.
    """

    def __init__(self, outbox: OutboxStore, notifier: Notifier, *,
                 retry_interval: float, retry_max: int,
                 max_backoff: float = 300,
                 duplicate_window: float = DUPLICATE_WINDOW,
                 hostname: str | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 poll_interval: float = POLL_INTERVAL) -> None:
        if retry_interval <= 0 or max_backoff <= 0 or poll_interval <= 0:
            raise ValueError(
                "retry_interval, max_backoff and poll_interval must be > 0")
        if duplicate_window < 0:
            raise ValueError("duplicate_window must be >= 0")
        self.outbox = outbox
        self.notifier = notifier
        self.retry_interval = float(retry_interval)
        self.retry_max = max(int(retry_max), 1)
        self.max_backoff = float(max_backoff)
        self.duplicate_window = float(duplicate_window)
        self.hostname = hostname or None
        self.poll_interval = float(poll_interval)
        self._clock = clock
        self._rng = rng
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.follower = Follower(outbox, notifier, base=self.retry_interval,
                                 cap=self.max_backoff, clock=clock,
                                 stopping=self._stopping.is_set)
        self._reach = Reach(self.retry_interval, self.max_backoff)
        # A failing loop is logged once per distinct error, a raising
        # notifier once per entry until it settles, a configuration error
        # once until it changes or something is delivered.
        self._loop_log = LogOnce(LOG)
        self._raise_log = LogOnce(LOG)
        self._config_log = LogOnce(LOG)

    # -- thread control ----------------------------------------------------

    def start(self) -> None:
        """Start delivering; pending rows left by an earlier run go first."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._wake.set()   # scan at once: there may be leftovers from before
        self._thread = threading.Thread(target=self._run, name="iim-sender",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to finish; return whether it did within ``timeout``.

        An attempt in flight is bounded by the notifier's own deadline; if
        it outlives ``timeout`` the daemon thread is abandoned and the
        entry, still pending in the database, is retried next start.
        """
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            LOG.warning("notification sender did not stop within %.1fs; "
                        "an undelivered entry stays pending for the next "
                        "start", timeout)
            return False
        self._thread = None
        return True

    def wake(self) -> None:
        """A new outbox row was committed: deliver it now, not at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self.run_once()
                self._loop_log.resolved("notification sender working again")
            except Exception as e:
                self._loop_log.problem(
                    "notification sender iteration failed, will keep "
                    "trying: %s", one_line("%s: %s" % (type(e).__name__, e),
                                           MAX_DETAIL),
                    level=logging.ERROR, exc_info=True)
                delay = self.poll_interval
            self._wake.wait(delay)
            self._wake.clear()

    # -- one scan ------------------------------------------------------------

    def run_once(self) -> float:
        """Deliver every due entry once, follow delivered ones; return
        seconds until the next scan. Public so tests (and a one-shot
        "flush" command) can drive the sender without its thread."""
        self._probe()
        for entry in self.outbox.due(self._clock(), BATCH):
            if self._stopping.is_set():
                return 0.0
            self._deliver(entry)
        self.follower.run_once()
        pending = self.outbox.pending()
        if not pending:
            return self.poll_interval
        until = pending[0].next_attempt_at - self._clock()
        return min(self.poll_interval, max(until, 0.0))

    def _probe(self) -> None:
        """While rows wait for an unreachable API, ask cheaply every
        ``retry_interval`` whether it is back, and send them when it is."""
        pending = {e.id: e for e in self.outbox.pending()}
        now = self._clock()
        waiting = self._reach.waiting(pending, now)
        if waiting and self.notifier.reachable():
            moved = self.outbox.expedite(waiting, now)
            self._reach.back(waiting)
            LOG.info("Masakari answers again: sending %d waiting "
                     "notification(s) now", moved)

    def _attempt(self, entry: OutboxEntry) -> DeliveryOutcome:
        try:
            return self.notifier.send(entry.notification)
        except Exception as e:
            # The driver broke its no-raise contract: a bug, but the
            # notification is still owed, so treat it as retryable.
            text = one_line("notifier %s raised %s: %s"
                            % (self.notifier.name or type(self.notifier).__name__,
                               type(e).__name__, e), MAX_DETAIL)
            if not self._raise_log.active(entry.id):   # once per entry
                self._raise_log.problem("notification for %s: %s",
                                        entry.notification.instance_uuid, text,
                                        key=entry.id, level=logging.ERROR,
                                        exc_info=True)
            return DeliveryOutcome(S.RETRY, text)

    def _prepare(self, entry: OutboxEntry) -> OutboxEntry:
        n = entry.notification
        if self.hostname and n.hostname != self.hostname:
            if self.outbox.readdress(entry.id, self.hostname):
                LOG.warning("notification for %s (episode %d) queued for host "
                            "%r is sent as %r ([DEFAULT] hostname)",
                            n.instance_uuid, entry.episode, n.hostname,
                            self.hostname)
                n = dataclasses.replace(n, hostname=self.hostname)
        if entry.restamp_due:
            # The last attempt collided in Masakari's duplicate window.
            stamped = format_generated_time(self._clock())
            if self.outbox.restamp(entry.id, stamped):
                n = dataclasses.replace(n, generated_time=stamped)
        return dataclasses.replace(entry, notification=n)

    def _deliver(self, entry: OutboxEntry) -> None:
        entry = self._prepare(entry)
        n = entry.notification
        lease = self._clock() + self.notifier.attempt_timeout() + LEASE_MARGIN
        if self.outbox.begin_attempt(entry.id, lease_until=lease) is None:
            return      # settled since due() listed it
        outcome = self._attempt(entry)
        attempts = entry.attempts + 1
        now = self._clock()
        expedited = self._reach.answered(entry.id, outcome.status)
        if outcome.status is S.DUPLICATE:
            resolved = duplicates.resolve(
                self.outbox, self.notifier, entry, outcome, now,
                window=self.duplicate_window, min_wait=self.retry_interval)
            if resolved is None:
                return      # collided: re-sent after the window
            outcome = resolved
        detail = one_line(outcome.detail, MAX_DETAIL)
        if outcome.status is S.DELIVERED:
            self.outbox.settle(entry.id, DELIVERED, now, detail,
                               outcome.masakari_uuid, outcome.engine_status)
            self._raise_log.resolved(key=entry.id)
            self._config_log.resolved()
            LOG.info("notification for %s (episode %d) delivered after %d "
                     "attempt(s)%s", n.instance_uuid, entry.episode, attempts,
                     ": " + detail if detail else "")
            return
        if outcome.status is S.REJECTED:
            self.outbox.settle(entry.id, DEAD, now, detail)
            self._raise_log.resolved(key=entry.id)
            LOG.error("notification for %s (episode %d) rejected by "
                      "Masakari, not retrying; kept as a dead letter "
                      "(masakari-iim outbox requeue %d re-sends it): %s",
                      n.instance_uuid, entry.episode, entry.id, detail)
            return
        delay = next_delay(attempts, self.retry_interval, self.max_backoff,
                           self._rng)
        self.outbox.mark_retry(entry.id, attempts, now + delay, detail)
        if outcome.status is S.UNREACHABLE:
            self._reach.unreachable(entry.id, expedited, now)
        elif outcome.status is S.MISCONFIGURED:
            self._config_log.problem(
                "Masakari refuses notifications until the configuration is "
                "fixed; they are kept and retried every %gs at most: %s",
                self.max_backoff, detail, level=logging.ERROR)
        if attempts == self.retry_max:
            LOG.error("notification for %s still undelivered after %d "
                      "attempts, will keep retrying every %gs at most: "
                      "%s", n.instance_uuid, attempts, self.max_backoff,
                      detail)
        elif attempts == 1:
            LOG.warning("notification for %s not delivered, retrying in "
                        "%.1fs: %s", n.instance_uuid, delay, detail)
        else:
            LOG.debug("notification for %s attempt %d failed, retrying "
                      "in %.1fs: %s", n.instance_uuid, attempts, delay,
                      detail)
