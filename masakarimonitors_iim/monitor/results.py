"""Apply verdicts and lifecycle facts to the journal: the one writer.

Between probing and acting, like kubelet's results manager: the
scheduler hands every verdict and every start or stop of a domain to
:class:`JournalWriter`, which runs the pure state machine and stores its
answer. When the machine reports an episode, the notification is queued
in the outbox in the same transaction as the state change, so after any
crash either both exist or neither does. Only the scheduler thread calls
it, so journal writes never race.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from oslo_log import log as logging

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier import base as notifier_base
from masakarimonitors_iim.outbox.store import OutboxStore
from masakarimonitors_iim.verdict import ProbeResult

LOG = logging.getLogger(__name__)

#: Seconds a delivered notification stays visible in status.
DELIVERED_RETENTION = 7 * 24 * 3600


def worth_saving(old: machine.Record, new: machine.Record) -> bool:
    """Skip the fsync when a healthy guest stays healthy: only the success
    counter and timestamps moved, and losing them on a crash changes no
    decision (a HEALTHY record needs no success streak)."""
    if new.state is not machine.State.HEALTHY or old.state is not machine.State.HEALTHY:
        return new != old
    keys = ("failures", "episode", "last_verdict", "last_reason")
    return any(getattr(old, k) != getattr(new, k) for k in keys)


class JournalWriter:
    """Turns verdicts and lifecycle facts into journal rows and outbox rows."""

    def __init__(self, db: Database, *, hostname: str, event: str,
                 on_queued: Callable[[], None],
                 wall: Callable[[], float]) -> None:
        self._db = db
        self.journal = JournalStore(db)
        self.outbox = OutboxStore(db)
        self._hostname = hostname
        self._event = event
        self._on_queued = on_queued
        self._wall = wall

    def recover(self) -> None:
        """Say at start-up what the journal remembers, so an operator sees
        that a restart neither forgot nor re-sent anything."""
        try:
            records = self.journal.all()
            pending = self.outbox.pending()
        except Exception:
            LOG.exception("cannot read the journal")
            return
        reported = [r for r in records if r.state is machine.State.REPORTED]
        LOG.info("journal: %d domains known, %d reported episodes, %d notifications "
                 "pending delivery", len(records), len(reported), len(pending))

    def watched(self, uuid: str, name: str) -> machine.State:
        """A domain is monitored from now on: make sure it has a record;
        returns the journal state it starts from."""
        rec = self.journal.get(uuid)
        if rec is None:
            rec = self._new_record(uuid, name)
            self.journal.save(rec)
        return rec.state

    def verdict(self, uuid: str, name: str, result: ProbeResult,
                thresholds: machine.Thresholds) -> None:
        rec = self.journal.get(uuid) or self._new_record(uuid, name)
        new, report = machine.on_result(rec, result, thresholds, self._wall())
        if report is None:
            if worth_saving(rec, new):
                self.journal.save(new)
        else:
            notification = notifier_base.make_notification(
                uuid, self._hostname, report.detected_at, event=self._event)
            with self._db.transaction() as tx:
                self.journal.save(new, tx)
                self.outbox.add(notification, new.episode, new.last_reason,
                                new.updated_at, tx)
        if new.state is not rec.state:
            LOG.info("domain %s (%s): journal %s -> %s", name, uuid,
                     rec.state.value, new.state.value)
        if report is not None:
            LOG.warning("domain %s (%s): failure episode %d reported (%s); "
                        "notification queued for Masakari", name, uuid,
                        report.episode, report.reason)
            self._on_queued()

    def restarted(self, uuid: str) -> None:
        """A new boot: the guest must prove itself healthy again."""
        rec = self.journal.get(uuid)
        if rec is not None:
            self.journal.save(machine.on_restarted(rec, self._wall()))

    def stopped(self, uuid: str) -> None:
        rec = self.journal.get(uuid)
        if rec is not None:
            self.journal.save(machine.on_stopped(rec, self._wall()))

    def forget(self, uuid: str) -> None:
        """The domain was undefined; its queued notifications stay owed."""
        self.journal.forget(uuid)

    def prune(self) -> None:
        pruned = self.outbox.prune_delivered(self._wall() - DELIVERED_RETENTION)
        if pruned:
            LOG.info("pruned %d delivered notifications older than %d days",
                     pruned, DELIVERED_RETENTION // 86400)

    def _new_record(self, uuid: str, name: str) -> machine.Record:
        """A fresh record continues the domain's episode numbering: Nova
        undefines and redefines a domain on hard reboot, and a reused
        episode number would collide with an outbox row already there."""
        rec = machine.new_record(uuid, name, self._wall())
        return dataclasses.replace(rec, episode=self.outbox.last_episode(uuid))


