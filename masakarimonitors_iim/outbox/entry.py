"""One outbox row as the rest of the monitor sees it (read by the store,
the sender and status)."""
from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

from masakarimonitors_iim.notifier.base import Notification

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
OUTBOX_STATUSES = (PENDING, DELIVERED, DEAD)

#: Masakari engine statuses after which it does nothing more with a
#: notification (``engine_status``); new and running are on the way.
ENGINE_FINAL = ("finished", "failed", "ignored", "error")


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """One notification and where its delivery stands.

    Delivered and dead rows are kept: status output shows them, and a dead
    letter is evidence an operator needs.

    ``attempts`` counts every attempt started (the sender records the start
    durably, before sending). ``maybe_landed`` counts those made with the
    current ``generated_time`` since Masakari last showed it does not hold
    the notification (a 409 it answered for a different, earlier one): 0
    then, and the next attempt re-stamps ``generated_time``
    (:attr:`restamp_due`); any count keeps the time, since Masakari may
    hold it. Delivery is never inferred from it: a 409 is settled by
    asking Masakari.

    ``last_error`` says why the last attempt failed or why the row died
    (for a delivered row: Masakari's answer, or what became of it).
    ``masakari_uuid`` is the uuid Masakari gave the notification;
    ``engine_status`` its engine's last seen status (new, running,
    finished, failed, ignored, error; "" until known), looked at
    ``engine_checked_at``.
    """

    id: int
    notification: Notification
    episode: int
    reason: str
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    delivered_at: float | None
    maybe_landed: int = 0
    masakari_uuid: str = ""
    engine_status: str = ""
    engine_checked_at: float | None = None

    @property
    def restamp_due(self) -> bool:
        """The last attempt collided in Masakari's duplicate window: the next
        one must carry a new ``generated_time``. Derived: attempts were
        made, and none of them may have landed."""
        return self.status == PENDING and self.attempts > 0 and self.maybe_landed == 0


def entry(row: sqlite3.Row) -> OutboxEntry:
    """An outbox row as read from the database."""
    # A read-only reader may face a file the monitor has not migrated yet:
    # missing columns read as the migration would fill them (a v1 row
    # counts every attempt as maybe landed).
    keys = row.keys()

    def col(name: str, default: Any) -> Any:
        return row[name] if name in keys else default

    return OutboxEntry(
        id=row["id"],
        notification=Notification(
            instance_uuid=row["instance_uuid"], hostname=row["hostname"],
            generated_time=row["generated_time"], event=row["event"],
            vir_domain_event=row["vir_domain_event"], type=row["type"]),
        episode=row["episode"], reason=row["reason"], status=row["status"],
        attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"], created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        maybe_landed=col("maybe_landed", row["attempts"]),
        masakari_uuid=col("masakari_uuid", ""),
        engine_status=col("engine_status", ""),
        engine_checked_at=col("engine_checked_at", None))
