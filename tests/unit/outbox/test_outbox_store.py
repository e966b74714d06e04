"""The outbox rows: idempotent queueing, attempts, settling, pruning."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox.store import DEAD
from masakarimonitors_iim.outbox.store import DELIVERED
from masakarimonitors_iim.outbox.store import OutboxStore
from masakarimonitors_iim.outbox.store import PENDING
from tests.unit.outbox.helpers import reported
from tests.unit.outbox.helpers import save
from tests.unit.outbox.helpers import UUID


@pytest.fixture
def db(tmp_path):
    d = Database(str(tmp_path / "sub" / "journal.db"))
    yield d
    d.close()


@pytest.fixture
def store(db):
    return OutboxStore(db)


def test_record_and_notification_in_one_row_each(db, store):
    rec = reported()
    n = make_notification(UUID, "host1", rec.updated_at)
    assert save(db, rec, n) is True
    assert JournalStore(db).get(UUID) == rec
    [entry] = store.rows()
    assert entry.notification == n
    assert (entry.episode, entry.status, entry.attempts) == (1, "pending", 0)
    assert entry.reason == "agent timeout"
    assert entry.next_attempt_at == entry.created_at == rec.updated_at
    assert entry.last_error == "" and entry.delivered_at is None


def test_add_without_a_transaction_commits_alone(store):
    n = make_notification(UUID, "host1", 1.0)
    assert store.add(n, 1, "agent timeout", 5.0) is True
    assert store.add(n, 1, "agent timeout", 6.0) is False
    [entry] = store.rows()
    assert (entry.episode, entry.created_at) == (1, 5.0)


def test_replaying_an_episode_never_duplicates(db, store):
    rec = reported()
    first = make_notification(UUID, "host1", 100.0)
    assert save(db, rec, first)
    assert save(db, rec, first) is False      # identical replay: no-op
    [entry] = store.rows()
    assert entry.notification == first      # first row untouched
    assert save(db, reported(episode=2), make_notification(
        UUID, "host1", 300.0)) is True
    assert [e.episode for e in store.rows()] == [1, 2]


def test_a_different_notification_for_a_used_episode_is_never_dropped(db, store):
    save(db, reported(t=100.0), make_notification(UUID, "host1", 100.0))
    later = reported(t=200.0, reason="again")
    with pytest.raises(DatabaseError) as excinfo:
        save(db, later, make_notification(UUID, "host1", 200.0))
    msg = str(excinfo.value)
    assert "\n" not in msg and UUID in msg and "episode 1" in msg
    # Nothing written: not the journal update either.
    assert JournalStore(db).get(UUID) == reported(t=100.0)
    [entry] = store.rows()
    assert entry.notification.generated_time == \
        make_notification(UUID, "host1", 100.0).generated_time


def test_last_episode_survives_forget(db, store):
    assert store.last_episode(UUID) == 0
    save(db, reported(episode=1), make_notification(UUID, "h", 1.0))
    save(db, reported(episode=2, t=200.0), make_notification(UUID, "h", 2.0))
    save(db, reported(uuid="other", episode=7),
         make_notification("other", "h", 3.0))
    assert store.last_episode(UUID) == 2
    journal = JournalStore(db)
    journal.forget(UUID)
    assert journal.get(UUID) is None
    assert store.last_episode(UUID) == 2
    assert store.last_episode("never-seen") == 0


def test_begin_attempt_is_committed_before_the_attempt(db, store):
    save(db, reported(), make_notification(UUID, "h", 1.0))
    [entry] = store.rows()
    assert (entry.attempts, entry.maybe_landed) == (0, 0)
    assert store.begin_attempt(entry.id) == 0
    # Visible to another connection at once: it is on disk, not pending
    # in a transaction that a crash would roll back.
    with Database(db.path) as other:
        [seen] = OutboxStore(other).rows()
    assert (seen.attempts, seen.maybe_landed) == (1, 1)
    assert store.begin_attempt(entry.id) == 1
    assert store.settle(entry.id, DELIVERED, 5.0)
    assert store.begin_attempt(entry.id) is None        # settled
    assert store.rows()[0].attempts == 2


def test_collision_then_restamp(db, store):
    save(db, reported(), make_notification(UUID, "h", 1.0))
    [entry] = store.rows()
    assert not entry.restamp_due
    assert store.begin_attempt(entry.id) == 0
    assert not store.restamp(entry.id, "2030-01-01T00:00:00.000000")  # may have landed
    assert store.mark_collision(entry.id, 500.0, "HTTP 409: duplicate")
    [entry] = store.rows()
    assert (entry.attempts, entry.maybe_landed, entry.next_attempt_at,
            entry.last_error) == (1, 0, 500.0, "HTTP 409: duplicate")
    assert entry.restamp_due
    assert store.restamp(entry.id, "2030-01-01T00:00:00.000000")
    assert store.rows()[0].notification.generated_time == \
        "2030-01-01T00:00:00.000000"
    assert store.begin_attempt(entry.id) == 0
    assert not store.rows()[0].restamp_due
    assert store.mark_retry(entry.id, 2, 600.0, "timeout")
    assert store.rows()[0].maybe_landed == 1      # a timeout may have landed


def test_an_error_between_record_and_notification_writes_neither(db, store):
    """The record and its notification share a transaction: whatever fails
    after the record is written takes the record back with it."""
    journal = JournalStore(db)
    with pytest.raises(ValueError):
        with db.transaction() as tx:
            journal.save(reported(), tx)
            raise ValueError("notification for another instance")
    assert journal.all() == [] and store.rows() == []


def test_due_pending_and_marks(db, store):
    for i, uuid in enumerate(["a", "b", "c"]):
        save(db, reported(uuid=uuid, t=10.0 + i),
             make_notification(uuid, "host1", 10.0 + i))
    a, b, c = store.rows()
    assert [e.id for e in store.due(10.5, 10)] == [a.id]
    assert [e.id for e in store.due(99, 2)] == [a.id, b.id]

    assert store.begin_attempt(a.id) == 0
    assert store.mark_retry(a.id, 1, 50.0, "HTTP 500: boom")
    assert [e.id for e in store.due(20, 10)] == [b.id, c.id]
    assert [e.id for e in store.pending()] == [b.id, c.id, a.id]
    assert store.begin_attempt(b.id) == 0
    assert store.settle(b.id, DELIVERED, 21.0, "accepted")
    assert store.begin_attempt(c.id) == 0
    assert store.settle(c.id, DEAD, 22.0, "HTTP 400: no such host")
    assert [e.id for e in store.pending()] == [a.id]

    rows = {e.id: e for e in store.rows()}
    assert (rows[a.id].attempts, rows[a.id].next_attempt_at,
            rows[a.id].last_error) == (1, 50.0, "HTTP 500: boom")
    assert (rows[b.id].status, rows[b.id].attempts,
            rows[b.id].delivered_at) == ("delivered", 1, 21.0)
    assert (rows[c.id].status, rows[c.id].last_error,
            rows[c.id].delivered_at) == ("dead", "HTTP 400: no such host", 22.0)
    assert [e.id for e in store.rows("dead")] == [c.id]
    assert [e.id for e in store.rows("delivered")] == [b.id]
    with pytest.raises(ValueError):
        store.rows("sent")

    # settled rows cannot be moved again
    assert not store.mark_retry(b.id, 5, 1.0, "late")
    assert not store.settle(b.id, DEAD, 1.0, "late")
    assert not store.settle(c.id, DELIVERED, 1.0, "late")
    assert store.rows("delivered")[0].last_error == "accepted"


def test_settle_only_delivers_or_kills(db, store):
    save(db, reported(), make_notification(UUID, "h", 1.0))
    [entry] = store.rows()
    for status in (PENDING, "sent"):
        with pytest.raises(ValueError):
            store.settle(entry.id, status, 5.0)
    assert store.rows()[0].status == PENDING


def test_prune_delivered_keeps_dead_and_pending(db, store):
    for uuid in ["a", "b", "c"]:
        save(db, reported(uuid=uuid), make_notification(uuid, "h", 1.0))
    a, b, c = store.rows()
    store.settle(a.id, DELIVERED, 10.0)
    store.settle(b.id, DEAD, 10.0, "refused")
    assert store.prune_delivered(before=5.0) == 0
    assert store.prune_delivered(before=11.0) == 1
    assert [e.id for e in store.rows()] == [b.id, c.id]


# -- where Masakari took it, dead letters back, waiting rows sent at once ---------

MU = "0f7e6c58-0000-4000-8000-000000000001"


def test_delivered_keeps_masakari_uuid_and_engine_status(db, store):
    save(db, reported(), make_notification(UUID, "h", 1.0))
    [entry] = store.rows()
    assert (entry.masakari_uuid, entry.engine_status,
            entry.engine_checked_at) == ("", "", None)
    assert store.settle(entry.id, DELIVERED, 5.0, "accepted", MU, "new")
    [entry] = store.rows()
    assert (entry.masakari_uuid, entry.engine_status,
            entry.engine_checked_at) == (MU, "new", 5.0)
    assert [e.id for e in store.following()] == [entry.id]
    assert store.record_engine(entry.id, "running", 9.0)
    assert store.rows()[0].last_error == "accepted"     # no note: kept
    assert store.record_engine(entry.id, "failed", 12.0, "NOT recovered")
    [entry] = store.rows()
    assert (entry.engine_status, entry.engine_checked_at, entry.last_error) == (
        "failed", 12.0, "NOT recovered")
    assert store.following() == []                      # final: done


def test_following_skips_rows_without_uuid_and_undelivered_ones(db, store):
    for uuid in ["a", "b", "c", "d"]:
        save(db, reported(uuid=uuid), make_notification(uuid, "h", 1.0))
    a, b, c, d = store.rows()
    store.settle(a.id, DELIVERED, 10.0, "logged only")       # no uuid
    store.settle(b.id, DELIVERED, 10.0, "ok", MU, "new")
    store.settle(c.id, DEAD, 10.0, "refused")
    assert [e.id for e in store.following()] == [b.id]
    assert not store.record_engine(d.id, "new", 11.0)       # pending: no


def test_requeue_puts_only_a_dead_letter_back(db, store):
    for uuid in ["a", "b"]:
        save(db, reported(uuid=uuid), make_notification(uuid, "h", 1.0))
    a, b = store.rows()
    store.begin_attempt(a.id)
    store.settle(a.id, DEAD, 10.0, "HTTP 409: host under maintenance")
    assert not store.requeue(b.id, 20.0)                    # pending
    assert store.requeue(a.id, 20.0)
    [again] = [e for e in store.due(20.0) if e.id == a.id]
    assert (again.status, again.attempts, again.next_attempt_at,
            again.delivered_at) == (PENDING, 1, 20.0, None)
    assert again.last_error == "HTTP 409: host under maintenance"  # why it died
    assert not again.restamp_due        # its attempt may have landed: same time
    assert not store.requeue(a.id, 21.0)                    # not dead any more
    assert not store.requeue(999, 21.0)


def test_expedite_and_readdress_touch_only_pending_rows(db, store):
    for uuid in ["a", "b", "c"]:
        save(db, reported(uuid=uuid), make_notification(uuid, "h", 1.0))
    a, b, c = store.rows()
    store.mark_retry(a.id, 1, 500.0, "refused")
    store.mark_retry(b.id, 1, 5.0, "refused")
    store.settle(c.id, DELIVERED, 3.0)
    assert store.expedite([a.id, b.id, c.id], 10.0) == 1    # b was due already
    assert [e.id for e in store.due(10.0)] == [b.id, a.id]
    assert store.readdress(a.id, "compute-7")
    assert not store.readdress(c.id, "compute-7")
    names = {e.id: e.notification.hostname for e in store.rows()}
    assert names == {a.id: "compute-7", b.id: "h", c.id: "h"}
