"""The outbox table: every notification owed to Masakari and where it stands.

A row is unique on (instance_uuid, episode), so replaying a report can
never queue a second notification for the same episode, and queueing a
*different* notification under an existing key raises instead of
dropping it. Rows are queued by the monitor's scheduler thread, in the
same transaction as the journal change that owes them, and worked off by
the sender thread (:mod:`masakarimonitors_iim.outbox.sender`).
"""
from __future__ import annotations

from typing import Any

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.db import Transaction
from masakarimonitors_iim.notifier.base import Notification
from masakarimonitors_iim.outbox.entry import DEAD
from masakarimonitors_iim.outbox.entry import DELIVERED
from masakarimonitors_iim.outbox.entry import ENGINE_FINAL
from masakarimonitors_iim.outbox.entry import entry as _entry
from masakarimonitors_iim.outbox.entry import OUTBOX_STATUSES
from masakarimonitors_iim.outbox.entry import OutboxEntry
from masakarimonitors_iim.outbox.entry import PENDING

__all__ = ["DEAD", "DELIVERED", "ENGINE_FINAL", "OUTBOX_STATUSES", "PENDING",
           "OutboxEntry", "OutboxStore"]


class OutboxStore:
    """The outbox table of ``db``; thread safety and errors come from ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- queueing ------------------------------------------------------------

    def add(self, notification: Notification, episode: int, reason: str,
            now: float, tx: Transaction | None = None) -> bool:
        """Queue ``notification`` for ``episode``, due at once.

        Pass the transaction that records the episode in the journal, so a
        crash leaves both or neither. Queueing the same notification again
        (same ``generated_time``) keeps the first row untouched and returns
        False. A *different* notification for a key that already has a row
        is never dropped silently: it raises :class:`DatabaseError`, which
        rolls back the whole transaction (it means the episode counter went
        backwards; see :meth:`last_episode`). Returns whether a new row was
        queued. Waking the sender is the caller's business (the monitor
        calls ``Sender.wake()`` once its transaction has committed).
        """
        if tx is None:
            with self.db.transaction() as own:
                return self._add(own, notification, episode, reason, now)
        return self._add(tx, notification, episode, reason, now)

    def _add(self, tx: Transaction, n: Notification, episode: int,
             reason: str, now: float) -> bool:
        # ON CONFLICT DO NOTHING, not INSERT OR IGNORE: the latter would
        # also swallow a NOT NULL/CHECK failure and lose the row.
        added = tx.execute(
            "INSERT INTO outbox (instance_uuid, episode, "
            "hostname, generated_time, type, event, vir_domain_event, "
            "reason, status, attempts, next_attempt_at, last_error, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, '', ?) "
            "ON CONFLICT (instance_uuid, episode) DO NOTHING",
            (n.instance_uuid, episode, n.hostname, n.generated_time, n.type,
             n.event, n.vir_domain_event, reason, PENDING, now, now))
        if added == 1:
            return True
        rows = tx.query("SELECT generated_time FROM outbox WHERE "
                        "instance_uuid = ? AND episode = ?",
                        (n.instance_uuid, episode))
        if rows and rows[0][0] != n.generated_time:
            raise DatabaseError(
                "journal database %s: instance %s episode %d already has "
                "a notification generated %s, refusing to drop the new "
                "one generated %s (episode numbering restarted?)"
                % (self.db.path, n.instance_uuid, episode, rows[0][0],
                   n.generated_time))
        return False

    def last_episode(self, uuid: str) -> int:
        """The highest episode in the outbox for ``uuid``, 0 if none.

        A record created for a domain the journal has no row for (new, or
        forgotten when it was undefined and since redefined, as Nova's hard
        reboot does) must start at this episode, or its next report reuses
        an episode number whose outbox row still exists. Pruned delivered
        rows no longer count, which is fine: their keys are free again.
        """
        rows = self.db.query("SELECT COALESCE(MAX(episode), 0) FROM outbox "
                             "WHERE instance_uuid = ?", (uuid,))
        return int(rows[0][0])

    # -- delivery ------------------------------------------------------------

    def due(self, now: float, limit: int = 50) -> list[OutboxEntry]:
        """Pending entries whose next attempt time has come, oldest first."""
        return [_entry(r) for r in self.db.query(
            "SELECT * FROM outbox WHERE status = ? AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?", (PENDING, now, limit))]

    def pending(self) -> list[OutboxEntry]:
        """Every entry not yet delivered nor given up, soonest first."""
        return [_entry(r) for r in self.db.query(
            "SELECT * FROM outbox WHERE status = ? "
            "ORDER BY next_attempt_at, id", (PENDING,))]

    def begin_attempt(self, id: int, lease_until: float | None = None) -> int | None:
        """Durably record that an attempt is starting, before it is sent.

        Increments ``attempts`` and ``maybe_landed`` in their own committed
        transaction, so an attempt whose POST landed just before a crash is
        known after the restart, and leases the row until ``lease_until``
        (its next attempt time; the outcome of the attempt sets it again),
        so no other sender takes it while this attempt may be in flight.
        Returns ``maybe_landed`` as it was before this attempt (how many
        earlier attempts may have landed), or None if the row is no longer
        pending.
        """
        with self.db.transaction() as tx:
            if tx.execute("UPDATE outbox SET attempts = attempts + 1, "
                          "maybe_landed = maybe_landed + 1, "
                          "next_attempt_at = COALESCE(?, next_attempt_at) "
                          "WHERE id = ? AND status = ?",
                          (lease_until, id, PENDING)) != 1:
                return None
            # Inside the transaction: the value just incremented, minus one.
            rows = tx.query("SELECT maybe_landed FROM outbox WHERE id = ?", (id,))
            return int(rows[0][0]) - 1

    def restamp(self, id: int, generated_time: str) -> bool:
        """Give a pending row a new ``generated_time`` (after a collision).

        Refused (False) when an attempt of the row may have landed
        (``maybe_landed`` > 0): Masakari may hold it under the old time,
        and a new time would make a genuine duplicate.
        """
        return self._update(
            "UPDATE outbox SET generated_time = ? WHERE id = ? AND status = ? "
            "AND maybe_landed = 0", (generated_time, id, PENDING))

    def mark_collision(self, id: int, next_attempt_at: float,
                       error: str) -> bool:
        """Record that the attempt just made collided with a different, earlier
        notification (409 duplicate, no earlier attempt may have landed):
        it created nothing, so ``maybe_landed`` drops to 0, which makes
        the next attempt re-stamp the row (:attr:`OutboxEntry.restamp_due`).
        """
        return self._update(
            "UPDATE outbox SET maybe_landed = 0, next_attempt_at = ?, "
            "last_error = ? WHERE id = ? AND status = ?",
            (next_attempt_at, error, id, PENDING))

    def mark_retry(self, id: int, attempts: int, next_attempt_at: float,
                   error: str) -> bool:
        """Record a failed attempt and when to try again.

        ``maybe_landed`` is left alone: a timeout or a 5xx may come after
        Masakari stored the notification.
        """
        return self._update(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, "
            "last_error = ? WHERE id = ? AND status = ?",
            (attempts, next_attempt_at, error, id, PENDING))

    def settle(self, id: int, status: str, now: float, detail: str = "",
               masakari_uuid: str = "", engine_status: str = "") -> bool:
        """End a pending entry: DELIVERED (Masakari has it, as
        ``masakari_uuid`` when known) or DEAD (Masakari refused it; the row
        stays as a dead letter). False if the row was no longer pending.

        ``now`` goes into ``delivered_at`` as the time the entry was
        settled, so status can show when it was delivered or died. Does
        not count an attempt: :meth:`begin_attempt` did.
        """
        if status not in (DELIVERED, DEAD):
            raise ValueError("an outbox entry settles as %r or %r, not %r"
                             % (DELIVERED, DEAD, status))
        return self._update(
            "UPDATE outbox SET status = ?, delivered_at = ?, last_error = ?, "
            "masakari_uuid = ?, engine_status = ?, engine_checked_at = ? "
            "WHERE id = ? AND status = ?",
            (status, now, detail, masakari_uuid, engine_status,
             now if engine_status else None, id, PENDING))

    def requeue(self, id: int, now: float) -> bool:
        """Put a dead letter back to pending, due ``now`` (an operator fixed
        the cause). Its attempts and why it died stay until the next
        attempt answers. False if the row is not dead."""
        with self.db.transaction() as tx:
            return tx.execute(
                "UPDATE outbox SET status = ?, next_attempt_at = ?, "
                "delivered_at = NULL WHERE id = ? AND status = ?",
                (PENDING, now, id, DEAD)) == 1

    def expedite(self, ids: list[int], now: float) -> int:
        """Make these pending rows due ``now`` (Masakari answers again)."""
        with self.db.transaction() as tx:
            return sum(tx.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND "
                "status = ? AND next_attempt_at > ?", (now, i, PENDING, now))
                for i in ids)

    def readdress(self, id: int, hostname: str) -> bool:
        """Send a pending row under this host's current name: Masakari
        refused the old one, and the operator fixed ``[DEFAULT] hostname``."""
        return self._update(
            "UPDATE outbox SET hostname = ? WHERE id = ? AND status = ?",
            (hostname, id, PENDING))

    # -- after delivery ------------------------------------------------------

    def following(self, limit: int = 200) -> list[OutboxEntry]:
        """Delivered rows whose end in Masakari is not known yet, least
        recently looked at first."""
        marks = ", ".join("?" * len(ENGINE_FINAL))
        return [_entry(r) for r in self.db.query(
            "SELECT * FROM outbox WHERE status = ? AND masakari_uuid != '' "
            "AND engine_status NOT IN (%s) ORDER BY "
            "COALESCE(engine_checked_at, delivered_at), id LIMIT ?" % marks,
            (DELIVERED, *ENGINE_FINAL, limit))]

    def record_engine(self, id: int, engine_status: str, now: float,
                      note: str | None = None) -> bool:
        """What Masakari's engine said of a delivered row, and when; ``note``
        replaces ``last_error`` (how the recovery ended, for status)."""
        sql = ("UPDATE outbox SET engine_status = ?, engine_checked_at = ?"
               + (", last_error = ?" if note is not None else "")
               + " WHERE id = ? AND status = ?")
        args: tuple[Any, ...] = (engine_status, now) + (
            (note,) if note is not None else ()) + (id, DELIVERED)
        return self._update(sql, args)

    # -- housekeeping --------------------------------------------------------

    def rows(self, status: str | None = None) -> list[OutboxEntry]:
        """Outbox entries for status display, oldest first."""
        if status is None:
            rows = self.db.query("SELECT * FROM outbox ORDER BY id")
        else:
            if status not in OUTBOX_STATUSES:
                raise ValueError("unknown outbox status %r" % status)
            rows = self.db.query(
                "SELECT * FROM outbox WHERE status = ? ORDER BY id", (status,))
        return [_entry(r) for r in rows]

    def prune_delivered(self, before: float) -> int:
        """Delete delivered entries settled before ``before``; keep dead letters.

        Without this the outbox grows by one row per episode forever.
        """
        with self.db.transaction() as tx:
            return tx.execute(
                "DELETE FROM outbox WHERE status = ? AND delivered_at < ?",
                (DELIVERED, before))

    def _update(self, sql: str, args: tuple[Any, ...]) -> bool:
        """One UPDATE of one row, committed; whether it matched."""
        with self.db.transaction() as tx:
            return tx.execute(sql, args) == 1
