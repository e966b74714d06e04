"""``masakari-iim outbox list`` and ``masakari-iim outbox requeue ID``.

Both work beside a running monitor: listing opens the database
read-only; re-queueing writes one row in one short transaction (SQLite's
WAL lets it in between the monitor's writes, and the busy timeout covers
the rare moment one is in progress). The running sender then finds the
row due at its next scan.
"""
from __future__ import annotations

import os
import sys
import time

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.outbox.store import DEAD, OutboxStore
from masakarimonitors_iim.status import model, render_text


def list_entries(journal_path: str, status: str | None, retry_max: int) -> int:
    view = model.load(journal_path, time.time(), retry_max)
    if not view.journal_found:
        print("no journal at %s: the monitor has not run with this configuration"
              % journal_path)
        return 0
    shown = [n for n in view.notifications if status is None or n.status == status]
    print("\n".join(render_text.notification_lines(view.now, shown)))
    return 0


def requeue(journal_path: str, entry_id: int) -> int:
    """Dead letter ``entry_id`` back to pending; one line says what happened."""
    if not os.path.exists(journal_path):
        # Opening read-write would create an empty database.
        print("masakari-iim: no journal at %s: nothing to re-queue" % journal_path,
              file=sys.stderr)
        return 1
    with Database(journal_path) as db:
        store = OutboxStore(db)
        entry = next((e for e in store.rows() if e.id == entry_id), None)
        if entry is None:
            print("masakari-iim: no notification #%d in the outbox at %s"
                  % (entry_id, journal_path), file=sys.stderr)
            return 1
        if entry.status != DEAD:
            print("masakari-iim: notification #%d is %s, not dead: nothing to re-queue"
                  % (entry_id, entry.status), file=sys.stderr)
            return 1
        if not store.requeue(entry_id, time.time()):
            print("masakari-iim: notification #%d changed meanwhile: nothing re-queued"
                  % entry_id, file=sys.stderr)
            return 1
    print("notification #%d (instance %s, episode %d) re-queued after %d attempt(s): "
          "the monitor sends it again at its next outbox scan"
          % (entry_id, entry.notification.instance_uuid, entry.episode, entry.attempts))
    return 0
