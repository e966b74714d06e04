"""``masakari-iim status`` reads the journal without writing to it."""
from __future__ import annotations

import os
import sqlite3

import pytest

from masakarimonitors_iim import status
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.notifier.base import make_notification
from tests.unit.outbox.helpers import save

UUID = "11111111-2222-3333-4444-555555555555"


def reported(episode=1, t=100.0):
    return machine.Record(uuid=UUID, name="vm1", state=machine.State.REPORTED,
                          failures=3, episode=episode, last_reason="agent timeout",
                          since=t, seen_healthy=True, updated_at=t)


def test_render_beside_a_running_monitor(tmp_path):
    path = str(tmp_path / "journal.db")
    with Database(path) as monitor:
        save(monitor, reported(), make_notification(UUID, "host1", 100.0))
        text = status.render(path)
        assert UUID in text and "REPORTED" in text
        assert "episode 1 generated" in text and "pending after 0 attempt(s)" in text
        # the monitor's connection still writes afterwards
        save(monitor, reported(episode=2, t=200.0),
             make_notification(UUID, "host1", 200.0))
    assert "episode 2" in status.render(path)


def test_render_without_a_journal_creates_nothing(tmp_path):
    path = tmp_path / "state" / "journal.db"
    assert "no journal at" in status.render(str(path))
    assert not path.parent.exists()


def test_render_never_initialises_or_migrates(tmp_path):
    """Opening read-write would create the schema in an empty file (or
    migrate an old one) under the running monitor's feet."""
    path = tmp_path / "journal.db"
    path.write_bytes(b"")
    with pytest.raises(DatabaseError) as excinfo:
        status.render(str(path))
    assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)
    assert path.read_bytes() == b""
    assert not os.path.exists(str(path) + "-wal")


def test_render_leaves_the_journal_mode_alone(tmp_path):
    path = str(tmp_path / "journal.db")
    with Database(path) as s:
        save(s, reported(), make_notification(UUID, "host1", 100.0))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    conn.close()
    assert UUID in status.render(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
