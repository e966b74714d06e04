"""The journal records: round trip, replacement, forgetting, concurrency."""
from __future__ import annotations

import dataclasses
import threading

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox.store import OutboxStore
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
    return JournalStore(db)


def test_record_round_trip(store):
    full = reported()
    bare = machine.new_record("u-2", "vm2", 5.0)
    store.save(full)
    store.save(bare)
    assert store.get(UUID) == full
    assert store.get("u-2") == bare
    assert store.get("nope") is None
    assert store.all() == [full, bare]   # ordered by name: "vm-1" < "vm2"


def test_save_replaces_the_record(store):
    store.save(reported())
    newer = dataclasses.replace(reported(), state=State.HEALTHY, failures=0)
    store.save(newer)
    assert store.all() == [newer]


def test_save_in_the_callers_transaction_rolls_back_with_it(db, store):
    store.save(reported(episode=1))
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            store.save(reported(episode=2), tx)
            assert store.get(UUID).episode == 2     # visible inside
            raise RuntimeError("crash before commit")
    assert store.get(UUID).episode == 1


def test_forget_keeps_the_outbox(db, store):
    save(db, reported(), make_notification(UUID, "host1", 1.0))
    store.forget(UUID)
    assert store.get(UUID) is None
    assert len(OutboxStore(db).pending()) == 1


def test_redefined_domain_gets_its_next_episode_notified(db, store):
    """Nova's hard reboot undefines and redefines the domain: forget(),
    then a new record; its next failure must be a new outbox row."""
    outbox = OutboxStore(db)
    save(db, reported(episode=1), make_notification(UUID, "h", 100.0))
    store.forget(UUID)
    fresh = dataclasses.replace(machine.new_record(UUID, "vm", 150.0),
                                episode=outbox.last_episode(UUID))
    store.save(fresh)
    again = reported(episode=fresh.episode + 1, t=300.0)
    assert save(db, again, make_notification(UUID, "h", 300.0)) is True
    assert [e.episode for e in outbox.pending()] == [1, 2]


def test_survives_reopen(tmp_path):
    path = str(tmp_path / "j.db")
    with Database(path) as db:
        save(db, reported(), make_notification(UUID, "host1", 1.0))
    with Database(path) as db:
        assert JournalStore(db).get(UUID) == reported()
        assert len(OutboxStore(db).pending()) == 1


def test_concurrent_writers(db, store):
    outbox = OutboxStore(db)

    def work(k):
        for i in range(25):
            uuid = "%d-%d" % (k, i)
            save(db, reported(uuid=uuid), make_notification(uuid, "h", 1.0))
            outbox.due(1e9, 5)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(store.all()) == 200
    assert len(outbox.pending()) == 200
