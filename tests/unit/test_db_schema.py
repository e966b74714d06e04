"""The schema's history: every older file is brought forward, once, and
a reader never migrates."""
from __future__ import annotations

import dataclasses
import sqlite3

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db_schema import MIGRATIONS
from masakarimonitors_iim.db_schema import SCHEMA_VERSION
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.outbox.store import OutboxStore
from tests.unit.outbox.helpers import UUID


def statements_up_to(version: int) -> list[str]:
    """What a monitor of schema ``version`` ran on a new file."""
    return [stmt for v in range(1, version + 1) for stmt in MIGRATIONS[v]]


def test_every_version_has_its_migration():
    """A bump of SCHEMA_VERSION without its statements (or a gap) would
    leave a file between versions."""
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


# -- older files ------------------------------------------------------------------

def make_v1(path, attempts=3):
    """A journal written by the schema-1 monitor, with one pending row."""
    conn = sqlite3.connect(str(path))
    for stmt in statements_up_to(1):
        conn.execute(stmt)
    conn.execute(
        "INSERT INTO outbox (instance_uuid, episode, hostname, generated_time, "
        "type, event, vir_domain_event, reason, status, attempts, "
        "next_attempt_at, last_error, created_at) VALUES "
        "(?, 1, 'h', '2024-01-01T00:00:00.000000', 'VM', 'LIFECYCLE', "
        "'STOPPED_FAILED', 'r', 'pending', ?, 1.0, 'HTTP 500', 1.0)",
        (UUID, attempts))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def user_version(path):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_v1_rows_count_every_attempt_as_maybe_landed(tmp_path):
    path = tmp_path / "j.db"
    make_v1(path, attempts=3)
    with Database(str(path)) as d:
        [entry] = OutboxStore(d).pending()
        assert (entry.attempts, entry.maybe_landed) == (3, 3)
        assert not entry.restamp_due
    assert user_version(path) == SCHEMA_VERSION == 4


MU = "0f7e6c58-0000-4000-8000-000000000001"


def make_v2(path):
    """A journal written by the schema-2 monitor: a pending row, a row
    delivered with Masakari's answer, one delivered on a 409 and a dead one."""
    conn = sqlite3.connect(str(path))
    for stmt in statements_up_to(2):
        conn.execute(stmt)
    rows = [("pending", 2, "HTTP 500", None),
            ("delivered", 1, "accepted as notification %s (status new)" % MU, 5.0),
            ("delivered", 2, "Masakari already had it (409 duplicate): "
                             "HTTP 409: is duplicate", 6.0),
            ("dead", 1, "HTTP 400: nope", 7.0)]
    for episode, (status, attempts, last_error, settled) in enumerate(rows, 1):
        conn.execute(
            "INSERT INTO outbox (instance_uuid, episode, hostname, "
            "generated_time, type, event, vir_domain_event, reason, status, "
            "attempts, next_attempt_at, last_error, created_at, delivered_at, "
            "maybe_landed) VALUES (?, ?, 'h', '2024-01-01T00:00:00.000000', "
            "'VM', 'LIFECYCLE', 'STOPPED_FAILED', 'r', ?, ?, 1.0, ?, 1.0, ?, ?)",
            (UUID, episode, status, attempts, last_error, settled, attempts))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_v2_file_migrates_and_keeps_the_masakari_uuid_it_was_told(tmp_path):
    path = tmp_path / "j.db"
    make_v2(path)
    with Database(str(path), read_only=True) as ro:      # before: defaults
        assert [(e.masakari_uuid, e.engine_status, e.engine_checked_at)
                for e in OutboxStore(ro).rows()] == [("", "", None)] * 4
    assert user_version(path) == 2
    with Database(str(path)) as d:
        store = OutboxStore(d)
        pending, told, inferred, dead = store.rows()
        assert (pending.status, pending.attempts, pending.maybe_landed) == (
            "pending", 2, 2)
        assert (told.masakari_uuid, told.engine_status) == (MU, "")
        assert inferred.masakari_uuid == dead.masakari_uuid == ""
        assert told.last_error.startswith("accepted as notification")
        # the one with a uuid is followed to its end in Masakari
        assert [e.id for e in store.following()] == [told.id]
        assert store.requeue(dead.id, 10.0)
    assert user_version(path) == SCHEMA_VERSION


def test_read_only_does_not_migrate(tmp_path):
    path = tmp_path / "j.db"
    make_v1(path, attempts=2)
    with Database(str(path), read_only=True) as ro:
        [entry] = OutboxStore(ro).pending()
        assert (entry.attempts, entry.maybe_landed) == (2, 2)
    assert user_version(path) == 1


def make_v3(path):
    """A journal written by the schema-3 monitor: one FAILING domain."""
    conn = sqlite3.connect(str(path))
    for stmt in statements_up_to(3):
        conn.execute(stmt)
    conn.execute("INSERT INTO journal VALUES (?, 'vm', 'FAILING', 2, 0, 1, "
                 "'FAILED', 'agent hung', 5.0, 4.0, 1, 6.0)", (UUID,))
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


def test_v3_file_migrates_to_no_hold_and_an_unknown_boot(tmp_path):
    path = tmp_path / "j.db"
    make_v3(path)
    with Database(str(path)) as d:
        rec = JournalStore(d).get(UUID)
        assert rec is not None
        assert (rec.state.value, rec.failures, rec.episode, rec.held, rec.boot_id) == (
            "FAILING", 2, 1, "", "")
        JournalStore(d).save(dataclasses.replace(rec, held="observe only", boot_id="b1"))
    assert user_version(path) == SCHEMA_VERSION == 4
    with Database(str(path), read_only=True) as ro:
        rec = JournalStore(ro).get(UUID)
        assert rec is not None and (rec.held, rec.boot_id) == ("observe only", "b1")


def test_status_reads_a_v3_file_the_old_monitor_still_writes(tmp_path):
    """After a package upgrade, before the monitor restarts: the read-only
    reader does not migrate, and must not crash on the missing columns."""
    path = tmp_path / "j.db"
    make_v3(path)
    with Database(str(path), read_only=True) as ro:
        [rec] = JournalStore(ro).all()
        assert (rec.state.value, rec.failures, rec.held, rec.boot_id) == (
            "FAILING", 2, "", "")
    assert user_version(path) == 3
