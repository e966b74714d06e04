"""The one SQLite database: opening, transactions, durability, errors, read-only.

Migrating older files is in test_db_schema.py."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.db_schema import SCHEMA_VERSION
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox.store import OutboxStore
from tests.unit.outbox.helpers import reported
from tests.unit.outbox.helpers import save
from tests.unit.outbox.helpers import UUID

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture
def db(tmp_path):
    d = Database(str(tmp_path / "sub" / "journal.db"))
    yield d
    d.close()


def test_creates_parent_dir_with_wal_full_and_schema_version(tmp_path):
    path = tmp_path / "a" / "b" / "journal.db"
    with Database(str(path)) as d:
        assert d.query("PRAGMA journal_mode")[0][0] == "wal"
        assert d.query("PRAGMA synchronous")[0][0] == 2  # FULL
        assert d.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert d.query("PRAGMA busy_timeout")[0][0] > 0
    assert path.exists()


# -- transactions ---------------------------------------------------------------

def test_transaction_commits_its_statements_together(db):
    with db.transaction() as tx:
        save_args = ("u", "vm", "HEALTHY", 0, 0, 0, None, "", 1.0, None, 0, 1.0,
                     "", "", 0)
        assert tx.execute("INSERT INTO journal VALUES "
                          "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", save_args) == 1
        assert [r["uuid"] for r in tx.query("SELECT uuid FROM journal")] == ["u"]
        assert [r["uuid"] for r in db.query("SELECT uuid FROM journal")] == ["u"]
    with Database(db.path) as other:
        assert len(other.query("SELECT * FROM journal")) == 1


def test_failed_transaction_writes_nothing(db):
    journal, outbox = JournalStore(db), OutboxStore(db)
    journal.save(reported(episode=1))
    # Break the outbox insert: the journal update in the same transaction
    # must roll back with it (and the error must not be silently ignored).
    broken = make_notification(UUID, "host1", 1.0)
    object.__setattr__(broken, "hostname", None)   # NOT NULL violation
    with pytest.raises(DatabaseError):
        save(db, reported(episode=2), broken)
    assert journal.get(UUID) == reported(episode=1)
    assert outbox.rows() == []


def test_a_nested_transaction_is_refused_not_deadlocked(db):
    journal = JournalStore(db)
    with pytest.raises(DatabaseError) as excinfo:
        with db.transaction():
            journal.save(reported())    # forgot to pass the transaction on
    assert "already open" in one_line_error(excinfo, db.path)
    assert journal.all() == []


def test_a_transaction_is_dead_after_its_block(db):
    with db.transaction() as tx:
        pass
    with pytest.raises(DatabaseError) as excinfo:
        tx.execute("DELETE FROM journal")
    assert "outside" in one_line_error(excinfo, db.path)


def test_a_transaction_belongs_to_its_thread(db):
    errors = []
    with db.transaction() as tx:
        t = threading.Thread(target=lambda: errors.append(
            pytest.raises(DatabaseError, tx.query, "SELECT 1")))
        t.start()
        t.join(10)
    assert len(errors) == 1


CHILD = textwrap.dedent("""
    import sys
    from masakarimonitors_iim.db import Database
    from masakarimonitors_iim.journal import machine
    from masakarimonitors_iim.journal.store import JournalStore
    from masakarimonitors_iim.notifier.base import make_notification
    from masakarimonitors_iim.outbox.store import OutboxStore
    db = Database(sys.argv[1])
    journal, outbox = JournalStore(db), OutboxStore(db)
    i = 0
    while True:
        uuid = "uuid-%06d" % i
        rec = machine.new_record(uuid, "vm%d" % i, float(i))
        with db.transaction() as tx:
            journal.save(rec, tx)
            outbox.add(make_notification(uuid, "host1", float(i)),
                       rec.episode, rec.last_reason, rec.updated_at, tx)
        print(i, flush=True)
        i += 1
""")


def test_everything_committed_survives_sigkill(tmp_path):
    path = str(tmp_path / "j.db")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path],
                            stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO))
    watchdog = threading.Timer(60, proc.kill)   # never hang the suite
    watchdog.start()
    assert proc.stdout is not None
    try:
        last = -1
        for line in proc.stdout:
            last = int(line)
            if last >= 30:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    assert last >= 30, "child never got going"
    assert proc.returncode == -signal.SIGKILL

    with Database(path) as d:
        uuids = {r.uuid for r in JournalStore(d).all()}
        outbox = {e.notification.instance_uuid for e in OutboxStore(d).rows()}
    want = {"uuid-%06d" % i for i in range(last + 1)}
    assert want <= uuids
    assert uuids == outbox      # never a record without its notification


# -- errors -----------------------------------------------------------------------

def one_line_error(excinfo, path):
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_corrupt_file_is_one_clear_line(tmp_path):
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite at all\n" * 100)
    with pytest.raises(DatabaseError) as excinfo:
        Database(str(path))
    msg = one_line_error(excinfo, path)
    assert "move the file aside" in msg
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_damaged_pages_are_detected(tmp_path):
    path = tmp_path / "j.db"
    with Database(str(path)) as d:
        journal = JournalStore(d)
        for i in range(300):
            journal.save(reported(uuid="u%04d" % i, reason="x" * 200))
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for off in range(2 * page, min(len(data), 6 * page)):
        data[off] = 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(DatabaseError) as excinfo:
        Database(str(path))
    assert "move the file aside" in one_line_error(excinfo, path)


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "j.db"
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DatabaseError) as excinfo:
        Database(str(path))
    assert "newer" in one_line_error(excinfo, path)


def test_unusable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "j.db"
    with pytest.raises(DatabaseError) as excinfo:
        Database(str(path))
    one_line_error(excinfo, path)


def test_closed_database_raises_database_error(tmp_path):
    d = Database(str(tmp_path / "j.db"))
    d.close()
    d.close()   # idempotent
    with pytest.raises(DatabaseError):
        JournalStore(d).get(UUID)


# -- read-only --------------------------------------------------------------------

def test_read_only_refuses_a_missing_file_and_creates_nothing(tmp_path):
    path = tmp_path / "nowhere" / "j.db"
    with pytest.raises(DatabaseError) as excinfo:
        Database(str(path), read_only=True)
    assert "does not exist" in one_line_error(excinfo, path)
    assert not path.parent.exists()


def test_read_only_refuses_an_uninitialised_file(tmp_path):
    path = tmp_path / "j.db"
    path.write_bytes(b"")
    with pytest.raises(DatabaseError) as excinfo:
        Database(str(path), read_only=True)
    one_line_error(excinfo, path)
    assert path.read_bytes() == b""


def test_read_only_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "j.db"
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DatabaseError) as excinfo:
        Database(str(path), read_only=True)
    assert "newer" in one_line_error(excinfo, path)


def test_read_only_reads_beside_a_writer_and_never_writes(db):
    journal = JournalStore(db)
    save(db, reported(), make_notification(UUID, "h", 1.0))
    with Database(db.path, read_only=True) as ro_db:
        ro, ro_outbox = JournalStore(ro_db), OutboxStore(ro_db)
        assert ro_db.read_only
        assert ro.get(UUID) == reported()
        assert [e.episode for e in ro_outbox.rows()] == [1]
        assert ro_outbox.last_episode(UUID) == 1
        # the writer keeps writing while a reader is open
        save(db, reported(episode=2, t=200.0), make_notification(UUID, "h", 2.0))
        assert ro_outbox.last_episode(UUID) == 2
        for write in (lambda: ro.save(reported(episode=3)),
                      lambda: ro.forget(UUID),
                      lambda: ro_outbox.begin_attempt(1),
                      lambda: ro_outbox.prune_delivered(1e9)):
            with pytest.raises(DatabaseError) as excinfo:
                write()
            assert "read-only" in one_line_error(excinfo, db.path)
    assert journal.get(UUID) == reported(episode=2, t=200.0)
