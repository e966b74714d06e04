"""Apply verdicts and lifecycle facts to the journal: the one writer.

Between probing and acting, like kubelet's results manager: the
scheduler hands every verdict and every start or stop of a domain to
:class:`JournalWriter`, which runs the pure state machine and stores its
answer. When the machine reports an episode, the guards
(:mod:`masakarimonitors_iim.guards`) may hold it; otherwise the
notification is queued in the outbox in the same transaction as the
state change, so after any crash either both exist or neither does.
Only the scheduler thread calls it, so journal writes never race, and
the records can live in memory: the journal table is read once, then
only written through when a record changes.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from oslo_log import log as logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db import Transaction
from masakarimonitors_iim.guards.base import Guard
from masakarimonitors_iim.guards.budget import BudgetGuard
from masakarimonitors_iim.guards.observe import ObserveGuard
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier import base as notifier_base
from masakarimonitors_iim.outbox.store import OutboxStore
from masakarimonitors_iim.policy import EffectivePolicy
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
    keys = ("failures", "episode", "last_verdict", "last_reason", "held", "boot_id")
    return any(getattr(old, k) != getattr(new, k) for k in keys)


def trust_guards(policy_of: Callable[[str], EffectivePolicy | None],
                 writer: JournalWriter, others: Sequence[Guard]) -> list[Guard]:
    """The per-VM guards around the host-wide ones: watch-only mode first
    (its reason says what would have been notified), the restart budget
    last (it is only spent when nothing else holds the report)."""
    return [ObserveGuard(policy_of), *others, BudgetGuard(policy_of, writer)]


class JournalWriter:
    """Turns verdicts and lifecycle facts into journal rows and outbox rows."""

    def __init__(self, db: Database, *, hostname: str, event: str,
                 on_queued: Callable[[], None],
                 wall: Callable[[], float],
                 guards: Sequence[Guard] = ()) -> None:
        self._db = db
        self.journal = JournalStore(db)
        self.outbox = OutboxStore(db)
        self._hostname = hostname
        self._event = event
        self._on_queued = on_queued
        self._wall = wall
        self.guards: list[Guard] = list(guards)
        #: uuid -> record, as last written; None until first read
        self._records: dict[str, machine.Record] | None = None
        #: uuid -> name of the guard holding its report (logged once per hold)
        self._held_by: dict[str, str] = {}
        self._guard_trouble = LogOnce(LOG)

    # -- the records -----------------------------------------------------------
    def record(self, uuid: str) -> machine.Record | None:
        """The domain's record as last written (None: unknown to the journal)."""
        if self._records is None:
            self._records = {r.uuid: r for r in self.journal.all()}
        return self._records.get(uuid)

    def _save(self, rec: machine.Record, tx: Transaction | None = None) -> None:
        """Write through; the memory copy changes only once the row is
        written, so a failed write is retried from the same record."""
        self.journal.save(rec, tx)
        if self._records is not None:
            self._records[rec.uuid] = rec

    def notified_since(self, uuid: str, since: float) -> int:
        """Notifications queued for ``uuid`` at or after ``since`` (wall
        time), dead letters left out (they restarted nothing): what the
        restart budget counts. Read only when a report is due."""
        rows = self._db.query(
            "SELECT COUNT(*) FROM outbox WHERE instance_uuid = ? AND created_at >= ? "
            "AND status != 'dead'", (uuid, since))
        return int(rows[0][0])

    def recover(self) -> None:
        """Say at start-up what the journal remembers, so an operator sees
        that a restart neither forgot nor re-sent anything."""
        try:
            self._records = {r.uuid: r for r in self.journal.all()}
            pending = self.outbox.pending()
        except Exception:
            LOG.exception("cannot read the journal")
            return
        records = list(self._records.values())
        reported = [r for r in records if r.state is machine.State.REPORTED]
        LOG.info("journal: %d domains known, %d reported episodes, %d notifications "
                 "pending delivery", len(records), len(reported), len(pending))

    # -- facts -----------------------------------------------------------------
    def watched(self, uuid: str, name: str, boot_id: str = "",
                stale_after: float | None = None) -> machine.State:
        """A domain is monitored from now on: make sure it has a record;
        returns the journal state it starts from.

        ``boot_id`` is the domain's current boot: one other than the
        journal's is a restart the monitor did not see. ``stale_after``
        (seconds) ends a FAILING streak whose last verdict is older than
        that (see :func:`machine.on_watched_again`).
        """
        rec = self.record(uuid)
        if rec is None:
            new = dataclasses.replace(self._new_record(uuid, name), boot_id=boot_id)
        else:
            new = machine.on_watched_again(rec, boot_id, stale_after, self._wall())
            if new.boot_id != rec.boot_id and rec.boot_id and boot_id:
                LOG.info("domain %s (%s) booted while it was not monitored: "
                         "it must prove itself healthy again", name, uuid)
            elif new.state is not rec.state:
                LOG.info("domain %s (%s): the FAILING streak saved at %.0f is too "
                         "old to continue; starting from healthy", name, uuid,
                         rec.updated_at)
        if new != rec:
            self._save(new)
        return new.state

    def boot_seen(self, uuid: str, boot_id: str) -> bool:
        """The listing shows the domain's boot: True when it is a new one
        (not both known and equal), and the journal took it as a restart."""
        rec = self.record(uuid)
        if rec is None or not boot_id or rec.boot_id == boot_id:
            return False
        if not rec.boot_id:
            self._save(dataclasses.replace(rec, boot_id=boot_id))
            return False
        self._save(dataclasses.replace(machine.on_restarted(rec, self._wall()),
                                       boot_id=boot_id))
        self._held_by.pop(uuid, None)
        return True

    def verdict(self, uuid: str, name: str, result: ProbeResult,
                thresholds: machine.Thresholds) -> None:
        now = self._wall()
        rec = self.record(uuid) or self._new_record(uuid, name)
        self._note(uuid, result, now)
        new, report = machine.on_result(rec, result, thresholds, now)
        holder = ""
        if report is not None:
            # The guards judge the report that is due: a boot past its
            # deadline says so, not only the round's "agent not connected".
            held = self._hold(uuid, name, dataclasses.replace(result, reason=report.reason),
                              now)
            if held is not None:
                holder, why = held
                new, report = machine.on_held(rec, new, why), None
        if report is None:
            if worth_saving(rec, new):
                self._save(new)
        else:
            notification = notifier_base.make_notification(
                uuid, self._hostname, report.detected_at, event=self._event)
            with self._db.transaction() as tx:
                self.journal.save(new, tx)
                self.outbox.add(notification, new.episode, report.reason,
                                new.updated_at, tx)
            if self._records is not None:
                self._records[uuid] = new
        # Only once the record is written: a failed write is retried from
        # the same record, and its hold must then still be logged.
        was_held_by = self._held_by.pop(uuid, "")
        if holder:
            self._held_by[uuid] = holder
            if was_held_by != holder:
                LOG.warning("domain %s (%s): failure report held by guard %s: %s",
                            name, uuid, holder, new.held)
        elif was_held_by and report is None:
            LOG.info("domain %s (%s): held report no longer due (%s)", name, uuid,
                     new.state.value)
        if new.state is not rec.state:
            LOG.info("domain %s (%s): journal %s -> %s", name, uuid,
                     rec.state.value, new.state.value)
        if report is not None:
            LOG.warning("domain %s (%s): failure episode %d reported (%s)%s; "
                        "notification queued for Masakari", name, uuid,
                        report.episode, report.reason,
                        ", held before by guard %s" % was_held_by if was_held_by else "")
            self._on_queued()

    def restarted(self, uuid: str) -> None:
        """A new boot: the guest must prove itself healthy again. Which boot
        is not known from an event: the next listing tells (boot_seen)."""
        rec = self.record(uuid)
        if rec is not None:
            new = dataclasses.replace(machine.on_restarted(rec, self._wall()), boot_id="")
            self._save(new)
            if new.boots > 1:
                LOG.info("domain %s (%s) restarted %d times without answering: "
                         "its boot deadline still runs from the first boot",
                         new.name, uuid, new.boots - 1)
        self._held_by.pop(uuid, None)

    def in_boot_loop(self, uuid: str) -> bool:
        """The domain's last restart continued a boot not yet proven
        healthy (:func:`machine.on_restarted`): the runtime graces must
        not start again either."""
        rec = self.record(uuid)
        return (rec is not None and rec.state is machine.State.DISCOVERY
                and rec.boots > 1)

    def stopped(self, uuid: str) -> None:
        rec = self.record(uuid)
        if rec is not None:
            self._save(machine.on_stopped(rec, self._wall()))
        self._held_by.pop(uuid, None)

    def unwatched(self, uuid: str) -> None:
        """The domain is no longer monitored: the guards drop what they keep."""
        self._held_by.pop(uuid, None)
        for g in self.guards:
            try:
                g.forget(uuid)
            except Exception as exc:
                self._guard_failed(g, "forget", exc)

    def forget(self, uuid: str) -> None:
        """The domain was undefined; its queued notifications stay owed."""
        self.journal.forget(uuid)
        if self._records is not None:
            self._records.pop(uuid, None)
        self.unwatched(uuid)

    def prune(self) -> None:
        pruned = self.outbox.prune_delivered(self._wall() - DELIVERED_RETENTION)
        if pruned:
            LOG.info("pruned %d delivered notifications older than %d days",
                     pruned, DELIVERED_RETENTION // 86400)

    # -- guards ----------------------------------------------------------------
    def _note(self, uuid: str, result: ProbeResult, now: float) -> None:
        for g in self.guards:
            try:
                g.note(uuid, result, now)
            except Exception as exc:
                self._guard_failed(g, "note", exc)

    def _hold(self, uuid: str, name: str, result: ProbeResult,
              now: float) -> tuple[str, str] | None:
        """The first guard that holds: (its name, its reason). A guard that
        raises holds nothing: a broken guard must not leave a dead VM
        running."""
        for g in self.guards:
            try:
                why = g.hold(uuid, name, result, now)
            except Exception as exc:
                self._guard_failed(g, "hold", exc)
                continue
            if why:
                return g.name, why
        return None

    def _guard_failed(self, guard: Guard, call: str, exc: Exception) -> None:
        self._guard_trouble.problem("guard %s failed in %s(): %s; it is ignored for "
                                    "this call", getattr(guard, "name", "?"), call, exc,
                                    key=(getattr(guard, "name", "?"), call))

    def _new_record(self, uuid: str, name: str) -> machine.Record:
        """A fresh record continues the domain's episode numbering: Nova
        undefines and redefines a domain on hard reboot, and a reused
        episode number would collide with an outbox row already there."""
        rec = machine.new_record(uuid, name, self._wall())
        return dataclasses.replace(rec, episode=self.outbox.last_episode(uuid))
