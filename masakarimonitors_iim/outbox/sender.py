"""The outbox sender: delivers queued notifications until Masakari has them.

It runs in its own thread so a slow or unreachable Masakari never delays a
probe round, and it reads its work from the outbox in the monitor's
database, so whatever was pending when the process died is delivered
after the restart.

Unlike upstream masakari-monitors, which marks a notification sent after
``retry_max`` failed attempts and so silently loses it, this sender never
gives up on a retryable failure: ``retry_max`` only decides when the
operator is told, once, that delivery is overdue. Only Masakari refusing
the notification itself (a 4xx that retrying cannot fix) ends in a dead
letter, which stays in the database and in status output.

A 409 duplicate is proof of delivery only if an earlier attempt of the
same row may have landed. Masakari (``_is_duplicate_notification``) calls
a notification a duplicate when it holds any notification with the same
payload from this host generated up to
``duplicate_notification_detection_interval`` (180 s by default) before
it, whatever that one's status; so a new episode of the same instance
within that window of the previous one is refused too, and Masakari never
acts on it. The rule, per outbox row:

* every attempt is recorded durably *before* it is sent
  (``OutboxStore.begin_attempt``), so an attempt cut short by a crash counts;
* an attempt "may have landed" unless Masakari answered it with a 409
  duplicate while no earlier attempt may have landed; 2xx settles the row,
  a rejecting 4xx kills it, a 5xx, timeout or crash may come after
  Masakari stored the notification, so they all count
  (``OutboxEntry.maybe_landed``, reset when ``generated_time`` changes);
* a 409 duplicate with an earlier attempt that may have landed: delivered,
  Masakari already had it;
* a 409 duplicate with none: a collision with a different, earlier
  notification. The row stays pending, one warning is logged, and it is
  re-sent ``duplicate_window`` seconds later with ``generated_time``
  re-stamped to the time of that attempt, which then lies outside
  Masakari's window from anything it held at the collision. A re-stamped
  row that collides again is handled the same way, since its attempts
  with the new time have not landed either.
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
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.notifier.base import Notifier
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


class Sender:
    """Owns the delivery thread; everything else only calls :meth:`wake`.

    ``duplicate_window`` is Masakari's
    ``duplicate_notification_detection_interval``: how long a notification
    that collided with an earlier one waits before it is re-stamped and
    re-sent (never less than ``retry_interval``, so a window of 0 cannot
    make the sender hammer Masakari).
    """

    def __init__(self, outbox: OutboxStore, notifier: Notifier, *,
                 retry_interval: float, retry_max: int,
                 max_backoff: float = 300,
                 duplicate_window: float = DUPLICATE_WINDOW,
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
        self.poll_interval = float(poll_interval)
        self._clock = clock
        self._rng = rng
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # A failing loop is logged once per distinct error, a raising
        # notifier once per entry until it settles, not at every poll.
        self._loop_log = LogOnce(LOG)
        self._raise_log = LogOnce(LOG)

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

        An attempt in flight is bounded by the notifier's own request
        timeout; if it outlives ``timeout`` the daemon thread is abandoned
        and the entry, still pending in the database, is retried next start.
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
        """Deliver every due entry once; return seconds until the next scan.

        Public so tests (and a one-shot "flush" command) can drive the
        sender without its thread.
        """
        for entry in self.outbox.due(self._clock(), BATCH):
            if self._stopping.is_set():
                return 0.0
            self._deliver(entry)
        pending = self.outbox.pending()
        if not pending:
            return self.poll_interval
        until = pending[0].next_attempt_at - self._clock()
        return min(self.poll_interval, max(until, 0.0))

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
            return DeliveryOutcome(DeliveryStatus.RETRY, text)

    def _deliver(self, entry: OutboxEntry) -> None:
        if entry.restamp_due:
            # The last attempt collided in Masakari's duplicate window.
            stamped = format_generated_time(self._clock())
            if self.outbox.restamp(entry.id, stamped):
                entry = dataclasses.replace(entry, notification=dataclasses.replace(
                    entry.notification, generated_time=stamped))
        n = entry.notification
        landed_before = self.outbox.begin_attempt(entry.id)
        if landed_before is None:
            return      # settled since due() listed it
        outcome = self._attempt(entry)
        attempts = entry.attempts + 1
        now = self._clock()
        detail = one_line(outcome.detail, MAX_DETAIL)
        if outcome.status is DeliveryStatus.DUPLICATE:
            if landed_before > 0:
                outcome = DeliveryOutcome(DeliveryStatus.DELIVERED, outcome.detail)
                detail = one_line("Masakari already had it (409 duplicate): "
                                  + outcome.detail, MAX_DETAIL)
            else:
                self._collided(entry, attempts, now, detail)
                return
        if outcome.status is DeliveryStatus.DELIVERED:
            self.outbox.settle(entry.id, DELIVERED, now, detail)
            self._raise_log.resolved(key=entry.id)
            LOG.info("notification for %s (episode %d) delivered after %d "
                     "attempt(s)%s", n.instance_uuid, entry.episode, attempts,
                     ": " + detail if detail else "")
        elif outcome.status is DeliveryStatus.REJECTED:
            self.outbox.settle(entry.id, DEAD, now, detail)
            self._raise_log.resolved(key=entry.id)
            LOG.error("notification for %s (episode %d) rejected by "
                      "Masakari, not retrying; kept as a dead letter: %s",
                      n.instance_uuid, entry.episode, detail)
        else:
            delay = next_delay(attempts, self.retry_interval,
                               self.max_backoff, self._rng)
            self.outbox.mark_retry(entry.id, attempts, now + delay, detail)
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

    def _collided(self, entry: OutboxEntry, attempts: int, now: float,
                  detail: str) -> None:
        """Masakari refused this notification as a duplicate of a different,
        earlier one: keep it, and re-send it with a new generated_time once
        that one is out of Masakari's window."""
        n = entry.notification
        delay = max(self.duplicate_window, self.retry_interval)
        self.outbox.mark_collision(entry.id, now + delay, one_line(
            "%s; collided with an earlier notification in Masakari's "
            "duplicate window, re-sent with a new generated_time after it"
            % detail, MAX_DETAIL))
        again, hint = "", ""
        if attempts > 1:    # earlier attempts collided too
            again = " again"
            hint = ("; Masakari's window may be longer than the %gs assumed "
                    "here" % self.duplicate_window)
        LOG.warning("notification for %s (episode %d) collided%s with an "
                    "earlier notification for this instance: Masakari's "
                    "duplicate window (duplicate_notification_detection_"
                    "interval, 180 s by default) rejected it and will not act "
                    "on it; it will be re-sent with a new generated_time "
                    "after the window, in %.0fs%s: %s", n.instance_uuid,
                    entry.episode, again, delay, hint, detail)
