"""The journal: one row per domain with where its failure episode stands.

It lives in the monitor's one database (:mod:`masakarimonitors_iim.db`)
beside the outbox, so that a state change and the notification it owes
can be committed together: :meth:`JournalStore.save` takes the caller's
:class:`~masakarimonitors_iim.db.Transaction` for that. The journal knows
nothing about notifications; the caller (the monitor) pairs them.
"""
from __future__ import annotations

import sqlite3

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db import Transaction
from masakarimonitors_iim.journal.machine import Record
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.verdict import Verdict

_SAVE = (
    "INSERT OR REPLACE INTO journal (uuid, name, state, failures, "
    "successes, episode, last_verdict, last_reason, since, "
    "first_failure_at, seen_healthy, updated_at, held, boot_id, boots) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class JournalStore:
    """The journal table of ``db``.

    Written by the monitor's scheduler thread only; the sender never
    touches it. Thread safety and error translation come from ``db``.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, uuid: str) -> Record | None:
        """The stored record for ``uuid``, or None if the domain is new to us."""
        rows = self.db.query("SELECT * FROM journal WHERE uuid = ?", (uuid,))
        return _record(rows[0]) if rows else None

    def all(self) -> list[Record]:
        """Every stored record, by name: what status shows and startup reloads."""
        return [_record(r) for r in
                self.db.query("SELECT * FROM journal ORDER BY name, uuid")]

    def save(self, record: Record, tx: Transaction | None = None) -> None:
        """Store ``record``, replacing the domain's previous one.

        Pass ``tx`` to commit it together with the outbox row it owes
        (:meth:`masakarimonitors_iim.outbox.store.OutboxStore.add`): a
        crash then leaves both or neither. Without ``tx`` it commits alone.
        """
        args = (record.uuid, record.name, record.state.value, record.failures,
                record.successes, record.episode,
                record.last_verdict.value if record.last_verdict else None,
                record.last_reason, record.since, record.first_failure_at,
                int(record.seen_healthy), record.updated_at, record.held,
                record.boot_id, record.boots)
        if tx is not None:
            tx.execute(_SAVE, args)
            return
        with self.db.transaction() as own:
            own.execute(_SAVE, args)

    def forget(self, uuid: str) -> None:
        """Drop the domain's journal row (it was undefined).

        Its outbox rows stay: a notification already queued is still owed
        to Masakari even if the domain is gone.
        """
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM journal WHERE uuid = ?", (uuid,))


def _record(row: sqlite3.Row) -> Record:
    # A read-only reader (``masakari-iim status``) does not migrate: on a
    # file the running, older monitor still writes at schema 3 the v4
    # columns are absent, and mean what the migration would fill in.
    v4 = row.keys()
    return Record(
        uuid=row["uuid"], name=row["name"], state=State(row["state"]),
        failures=row["failures"], successes=row["successes"],
        episode=row["episode"],
        last_verdict=Verdict(row["last_verdict"]) if row["last_verdict"] else None,
        last_reason=row["last_reason"], since=row["since"],
        first_failure_at=row["first_failure_at"],
        seen_healthy=bool(row["seen_healthy"]), updated_at=row["updated_at"],
        held=row["held"] if "held" in v4 else "",
        boot_id=row["boot_id"] if "boot_id" in v4 else "",
        boots=row["boots"] if "boots" in v4 else 0)
