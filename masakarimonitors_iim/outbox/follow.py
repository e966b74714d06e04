"""Following a delivered notification to its end in Masakari.

Delivered is not recovered: Masakari's engine takes a notification
through new and running to finished, failed, ignored or error. The
sender thread calls :meth:`Follower.run_once` after its deliveries; it
looks each delivered notification up by its uuid (slower as it ages,
:func:`rules.follow_delay`) until its status is final, records it in the
outbox row, and when the recovery failed or was ignored while the
journal still sees the guest failing, says so loudly: an ERROR in the
log and in the row's ``last_error`` (status), instead of a REPORTED
domain sitting there silently.
"""
from __future__ import annotations

from collections.abc import Callable
import logging as std_logging

from oslo_log import log as logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.notifier.base import NotifierError
from masakarimonitors_iim.outbox import rules
from masakarimonitors_iim.outbox.store import OutboxStore

LOG = logging.getLogger(__name__)

#: Longest text kept in the outbox row.
MAX_NOTE = 1000
#: Notifications looked up per scan at most; the rest wait for the next.
BATCH = 20


class Follower:
    def __init__(self, outbox: OutboxStore, notifier: Notifier, *,
                 base: float, cap: float, clock: Callable[[], float],
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.outbox = outbox
        self.journal = JournalStore(outbox.db)
        self.notifier = notifier
        self.base = base
        self.cap = cap
        self._clock = clock
        self._stopping = stopping
        # A lookup that keeps failing is said once per row until it works.
        self._trouble = LogOnce(LOG)

    def run_once(self) -> None:
        """Look up the notifications due a look, until one lookup fails
        (Masakari is likely unreachable: each would cost the request
        timeout), a new notification is due for delivery (delivery goes
        first, on this same thread), or BATCH lookups were made."""
        looked = 0
        for entry in self.outbox.following():
            if looked >= BATCH or self._stopping():
                return
            now = self._clock()
            if looked and self.outbox.due(now, 1):
                return
            if not rules.follow_due(entry.delivered_at, entry.engine_checked_at,
                                    now, self.base, self.cap):
                continue
            looked += 1
            try:
                held = self.notifier.show(entry.masakari_uuid)
            except Exception as e:
                # NotifierError, or a driver bug: either way, look again later.
                if not isinstance(e, NotifierError):
                    e = NotifierError("%s: %s" % (type(e).__name__, e))
                self._trouble.problem(
                    "cannot look up notification %s (instance %s) in Masakari, "
                    "will look again: %s", entry.masakari_uuid,
                    entry.notification.instance_uuid, one_line(e, MAX_NOTE),
                    key=entry.id)
                # Looked at, even if unanswered: the next look backs off.
                self.outbox.record_engine(entry.id, entry.engine_status, now)
                return
            self._trouble.resolved(key=entry.id)
            status = one_line(held.status, 40)
            verdict = rules.recovery_note(
                status, entry.masakari_uuid,
                self.journal.get(entry.notification.instance_uuid), entry.episode)
            note = None
            if verdict is not None:
                level, text = verdict
                LOG.log(level, "instance %s (episode %d): %s",
                        entry.notification.instance_uuid, entry.episode, text)
                if level >= std_logging.WARNING:
                    note = one_line(text, MAX_NOTE)
            elif status != entry.engine_status:
                LOG.debug("notification %s for %s: %s", entry.masakari_uuid,
                          entry.notification.instance_uuid, status)
            self.outbox.record_engine(entry.id, status, now, note)
