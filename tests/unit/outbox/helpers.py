"""What the monitor does when a domain's episode is reported, for tests
that need journal rows and outbox rows written the way it writes them."""
from __future__ import annotations

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier.base import Notification
from masakarimonitors_iim.outbox.store import OutboxStore
from masakarimonitors_iim.verdict import Verdict

UUID = "11111111-2222-3333-4444-555555555555"


def reported(uuid=UUID, episode=1, t=100.0, reason="agent timeout"):
    return machine.Record(
        uuid=uuid, name="vm-" + uuid[:4], state=State.REPORTED, failures=3,
        successes=0, episode=episode, last_verdict=Verdict.FAILED,
        last_reason=reason, since=t, first_failure_at=t - 20,
        seen_healthy=True, updated_at=t)


def save(db: Database, record: machine.Record,
         notification: Notification | None = None) -> bool:
    """The record and the notification it owes, in one transaction; whether
    a new outbox row was queued."""
    with db.transaction() as tx:
        JournalStore(db).save(record, tx)
        if notification is None:
            return False
        return OutboxStore(db).add(notification, record.episode,
                                   record.last_reason, record.updated_at, tx)
