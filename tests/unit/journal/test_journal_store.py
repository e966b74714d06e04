"""The SQLite journal + outbox: atomicity, idempotency, durability, errors."""
from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal import store as store_mod
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.journal.store import JournalStoreError
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.verdict import Verdict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
UUID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def store(tmp_path):
    s = JournalStore(str(tmp_path / "sub" / "journal.db"))
    yield s
    s.close()


def reported(uuid=UUID, episode=1, t=100.0, reason="agent timeout"):
    return machine.Record(
        uuid=uuid, name="vm-" + uuid[:4], state=State.REPORTED, failures=3,
        successes=0, episode=episode, last_verdict=Verdict.FAILED,
        last_reason=reason, since=t, first_failure_at=t - 20,
        seen_healthy=True, updated_at=t)


def test_creates_parent_dir_with_wal_full_and_schema_version(tmp_path):
    path = tmp_path / "a" / "b" / "journal.db"
    with JournalStore(str(path)) as s:
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == \
            store_mod.SCHEMA_VERSION
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert path.exists()


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


def test_record_and_notification_in_one_row_each(store):
    rec = reported()
    n = make_notification(UUID, "host1", rec.updated_at)
    assert store.save(rec, n) is True
    [entry] = store.outbox_rows()
    assert entry.notification == n
    assert (entry.episode, entry.status, entry.attempts) == (1, "pending", 0)
    assert entry.reason == "agent timeout"
    assert entry.next_attempt_at == entry.created_at == rec.updated_at
    assert entry.last_error == "" and entry.delivered_at is None


def test_replaying_an_episode_never_duplicates(store):
    rec = reported()
    first = make_notification(UUID, "host1", 100.0)
    assert store.save(rec, first)
    assert store.save(rec, first) is False      # identical replay: no-op
    [entry] = store.outbox_rows()
    assert entry.notification == first      # first row untouched
    assert store.save(reported(episode=2), make_notification(
        UUID, "host1", 300.0)) is True
    assert [e.episode for e in store.outbox_rows()] == [1, 2]


def test_a_different_notification_for_a_used_episode_is_never_dropped(store):
    store.save(reported(t=100.0), make_notification(UUID, "host1", 100.0))
    later = reported(t=200.0, reason="again")
    with pytest.raises(JournalStoreError) as excinfo:
        store.save(later, make_notification(UUID, "host1", 200.0))
    msg = str(excinfo.value)
    assert "\n" not in msg and UUID in msg and "episode 1" in msg
    # Nothing written: not the journal update either.
    assert store.get(UUID) == reported(t=100.0)
    [entry] = store.outbox_rows()
    assert entry.notification.generated_time == \
        make_notification(UUID, "host1", 100.0).generated_time


def test_last_episode_survives_forget(store):
    assert store.last_episode(UUID) == 0
    store.save(reported(episode=1), make_notification(UUID, "h", 1.0))
    store.save(reported(episode=2, t=200.0), make_notification(UUID, "h", 2.0))
    store.save(reported(uuid="other", episode=7),
               make_notification("other", "h", 3.0))
    assert store.last_episode(UUID) == 2
    store.forget(UUID)
    assert store.get(UUID) is None
    assert store.last_episode(UUID) == 2
    assert store.last_episode("never-seen") == 0


def test_redefined_domain_gets_its_next_episode_notified(store):
    """Nova's hard reboot undefines and redefines the domain: forget(),
    then a new record; its next failure must be a new outbox row."""
    store.save(reported(episode=1), make_notification(UUID, "h", 100.0))
    store.forget(UUID)
    fresh = dataclasses.replace(machine.new_record(UUID, "vm", 150.0),
                                episode=store.last_episode(UUID))
    store.save(fresh)
    again = reported(episode=fresh.episode + 1, t=300.0)
    assert store.save(again, make_notification(UUID, "h", 300.0)) is True
    assert [e.episode for e in store.pending()] == [1, 2]


def test_begin_attempt_is_committed_before_the_attempt(store, tmp_path):
    store.save(reported(), make_notification(UUID, "h", 1.0))
    [entry] = store.outbox_rows()
    assert (entry.attempts, entry.maybe_landed) == (0, 0)
    assert store.begin_attempt(entry.id) == 0
    # Visible to another connection at once: it is on disk, not pending
    # in a transaction that a crash would roll back.
    with JournalStore(store.path) as other:
        [seen] = other.outbox_rows()
    assert (seen.attempts, seen.maybe_landed) == (1, 1)
    assert store.begin_attempt(entry.id) == 1
    assert store.mark_delivered(entry.id, 5.0)
    assert store.begin_attempt(entry.id) is None        # settled
    assert store.outbox_rows()[0].attempts == 2


def test_collision_then_restamp(store):
    store.save(reported(), make_notification(UUID, "h", 1.0))
    [entry] = store.outbox_rows()
    assert not entry.restamp_due
    assert store.begin_attempt(entry.id) == 0
    assert not store.restamp(entry.id, "2030-01-01T00:00:00.000000")  # may have landed
    assert store.mark_collision(entry.id, 500.0, "HTTP 409: duplicate")
    [entry] = store.outbox_rows()
    assert (entry.attempts, entry.maybe_landed, entry.next_attempt_at,
            entry.last_error) == (1, 0, 500.0, "HTTP 409: duplicate")
    assert entry.restamp_due
    assert store.restamp(entry.id, "2030-01-01T00:00:00.000000")
    assert store.outbox_rows()[0].notification.generated_time == \
        "2030-01-01T00:00:00.000000"
    assert store.begin_attempt(entry.id) == 0
    assert not store.outbox_rows()[0].restamp_due
    assert store.mark_retry(entry.id, 2, 600.0, "timeout")
    assert store.outbox_rows()[0].maybe_landed == 1      # a timeout may have landed


def test_notification_must_match_record(store):
    with pytest.raises(ValueError):
        store.save(reported(), make_notification("other", "host1", 1.0))
    assert store.all() == [] and store.outbox_rows() == []


def test_failed_transaction_writes_nothing(store):
    store.save(reported(episode=1))
    # Break the outbox insert: the journal update in the same transaction
    # must roll back with it (and the error must not be silently ignored).
    broken = make_notification(UUID, "host1", 1.0)
    object.__setattr__(broken, "hostname", None)   # NOT NULL violation
    with pytest.raises(JournalStoreError):
        store.save(reported(episode=2), broken)
    assert store.get(UUID).episode == 1
    assert store.outbox_rows() == []


def test_forget_keeps_the_outbox(store):
    store.save(reported(), make_notification(UUID, "host1", 1.0))
    store.forget(UUID)
    assert store.get(UUID) is None
    assert len(store.pending()) == 1


def test_due_pending_and_marks(store):
    for i, uuid in enumerate(["a", "b", "c"]):
        store.save(reported(uuid=uuid, t=10.0 + i),
                   make_notification(uuid, "host1", 10.0 + i))
    a, b, c = store.outbox_rows()
    assert [e.id for e in store.due(10.5, 10)] == [a.id]
    assert [e.id for e in store.due(99, 2)] == [a.id, b.id]

    assert store.begin_attempt(a.id) == 0
    assert store.mark_retry(a.id, 1, 50.0, "HTTP 500: boom")
    assert [e.id for e in store.due(20, 10)] == [b.id, c.id]
    assert [e.id for e in store.pending()] == [b.id, c.id, a.id]
    assert store.begin_attempt(b.id) == 0
    assert store.mark_delivered(b.id, 21.0, "accepted")
    assert store.begin_attempt(c.id) == 0
    assert store.mark_dead(c.id, "HTTP 400: no such host", 22.0)
    assert [e.id for e in store.pending()] == [a.id]

    rows = {e.id: e for e in store.outbox_rows()}
    assert (rows[a.id].attempts, rows[a.id].next_attempt_at,
            rows[a.id].last_error) == (1, 50.0, "HTTP 500: boom")
    assert (rows[b.id].status, rows[b.id].attempts,
            rows[b.id].delivered_at) == ("delivered", 1, 21.0)
    assert (rows[c.id].status, rows[c.id].last_error) == (
        "dead", "HTTP 400: no such host")
    assert [e.id for e in store.outbox_rows("dead")] == [c.id]
    assert [e.id for e in store.outbox_rows("delivered")] == [b.id]
    with pytest.raises(ValueError):
        store.outbox_rows("sent")

    # settled rows cannot be moved again
    assert not store.mark_retry(b.id, 5, 1.0, "late")
    assert not store.mark_dead(b.id, "late", 1.0)
    assert not store.mark_delivered(c.id, 1.0, "late")
    assert store.outbox_rows("delivered")[0].last_error == "accepted"


def test_prune_delivered_keeps_dead_and_pending(store):
    for uuid in ["a", "b", "c"]:
        store.save(reported(uuid=uuid), make_notification(uuid, "h", 1.0))
    a, b, c = store.outbox_rows()
    store.mark_delivered(a.id, 10.0)
    store.mark_dead(b.id, "refused", 10.0)
    assert store.prune_delivered(before=5.0) == 0
    assert store.prune_delivered(before=11.0) == 1
    assert [e.id for e in store.outbox_rows()] == [b.id, c.id]


def test_survives_reopen(tmp_path):
    path = str(tmp_path / "j.db")
    with JournalStore(path) as s:
        s.save(reported(), make_notification(UUID, "host1", 1.0))
    with JournalStore(path) as s:
        assert s.get(UUID) == reported()
        assert len(s.pending()) == 1


def test_concurrent_writers(store):
    def work(k):
        for i in range(25):
            uuid = "%d-%d" % (k, i)
            store.save(reported(uuid=uuid), make_notification(uuid, "h", 1.0))
            store.due(1e9, 5)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(store.all()) == 200
    assert len(store.pending()) == 200


CHILD = textwrap.dedent("""
    import sys
    from masakarimonitors_iim.journal import machine
    from masakarimonitors_iim.journal.store import JournalStore
    from masakarimonitors_iim.notifier.base import make_notification
    s = JournalStore(sys.argv[1])
    i = 0
    while True:
        uuid = "uuid-%06d" % i
        rec = machine.new_record(uuid, "vm%d" % i, float(i))
        s.save(rec, make_notification(uuid, "host1", float(i)))
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

    with JournalStore(path) as s:
        uuids = {r.uuid for r in s.all()}
        outbox = {e.notification.instance_uuid for e in s.outbox_rows()}
    want = {"uuid-%06d" % i for i in range(last + 1)}
    assert want <= uuids
    assert uuids == outbox      # never a record without its notification


def one_line_error(excinfo, path):
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_corrupt_file_is_one_clear_line(tmp_path):
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite at all\n" * 100)
    with pytest.raises(JournalStoreError) as excinfo:
        JournalStore(str(path))
    msg = one_line_error(excinfo, path)
    assert "move the file aside" in msg
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_damaged_pages_are_detected(tmp_path):
    path = tmp_path / "j.db"
    with JournalStore(str(path)) as s:
        for i in range(300):
            s.save(reported(uuid="u%04d" % i, reason="x" * 200))
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for off in range(2 * page, min(len(data), 6 * page)):
        data[off] = 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(JournalStoreError) as excinfo:
        JournalStore(str(path))
    assert "move the file aside" in one_line_error(excinfo, path)


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "j.db"
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalStoreError) as excinfo:
        JournalStore(str(path))
    assert "newer" in one_line_error(excinfo, path)


def test_unusable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "j.db"
    with pytest.raises(JournalStoreError) as excinfo:
        JournalStore(str(path))
    one_line_error(excinfo, path)


def make_v1(path, attempts=3):
    """A journal written by the schema-1 monitor, with one pending row."""
    conn = sqlite3.connect(str(path))
    for stmt in store_mod._SCHEMA_V1:
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
    with JournalStore(str(path)) as s:
        [entry] = s.pending()
        assert (entry.attempts, entry.maybe_landed) == (3, 3)
        assert not entry.restamp_due
    assert user_version(path) == store_mod.SCHEMA_VERSION == 2


# -- read-only ----------------------------------------------------------------

def test_read_only_refuses_a_missing_file_and_creates_nothing(tmp_path):
    path = tmp_path / "nowhere" / "j.db"
    with pytest.raises(JournalStoreError) as excinfo:
        JournalStore(str(path), read_only=True)
    assert "does not exist" in one_line_error(excinfo, path)
    assert not path.parent.exists()


def test_read_only_refuses_an_uninitialised_file(tmp_path):
    path = tmp_path / "j.db"
    path.write_bytes(b"")
    with pytest.raises(JournalStoreError) as excinfo:
        JournalStore(str(path), read_only=True)
    one_line_error(excinfo, path)
    assert path.read_bytes() == b""


def test_read_only_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "j.db"
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalStoreError) as excinfo:
        JournalStore(str(path), read_only=True)
    assert "newer" in one_line_error(excinfo, path)


def test_read_only_reads_beside_a_writer_and_never_writes(store):
    store.save(reported(), make_notification(UUID, "h", 1.0))
    with JournalStore(store.path, read_only=True) as ro:
        assert ro.read_only
        assert ro.get(UUID) == reported()
        assert [e.episode for e in ro.outbox_rows()] == [1]
        assert ro.last_episode(UUID) == 1
        # the writer keeps writing while a reader is open
        store.save(reported(episode=2, t=200.0), make_notification(UUID, "h", 2.0))
        assert ro.last_episode(UUID) == 2
        for write in (lambda: ro.save(reported(episode=3)),
                      lambda: ro.forget(UUID),
                      lambda: ro.begin_attempt(1),
                      lambda: ro.prune_delivered(1e9)):
            with pytest.raises(JournalStoreError) as excinfo:
                write()
            assert "read-only" in one_line_error(excinfo, store.path)
    assert store.get(UUID).episode == 2


def test_read_only_does_not_migrate(tmp_path):
    path = tmp_path / "j.db"
    make_v1(path, attempts=2)
    with JournalStore(str(path), read_only=True) as ro:
        [entry] = ro.pending()
        assert (entry.attempts, entry.maybe_landed) == (2, 2)
    assert user_version(path) == 1


def test_closed_store_raises_journal_error(tmp_path):
    s = JournalStore(str(tmp_path / "j.db"))
    s.close()
    s.close()   # idempotent
    with pytest.raises(JournalStoreError):
        s.get(UUID)
