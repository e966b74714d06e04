"""What the monitor is doing, for an operator: written by the monitor,
read by ``masakari-iim status``. Reading never writes anything back."""
from __future__ import annotations

import json
import os
from typing import Any

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.outbox.store import OutboxStore

STATUS_NAME = "iim-status.json"


def status_path(journal_path: str) -> str:
    """The snapshot lives beside the journal, so one directory holds all
    the monitor's state."""
    return os.path.join(os.path.dirname(os.path.abspath(journal_path)), STATUS_NAME)


def write_snapshot(path: str, snapshot: dict[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(snapshot, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_snapshot(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def render(journal_path: str) -> str:
    """Plain text an operator can read at a glance."""
    if not os.path.exists(journal_path):
        return "no journal at %s: the monitor has not run with this configuration" % journal_path
    snap = read_snapshot(status_path(journal_path)) or {}
    # Read-only: no schema check or migration under a running monitor.
    with Database(journal_path, read_only=True) as db:
        records = JournalStore(db).all()
        outbox = OutboxStore(db).rows()
    monitored = snap.get("monitored", {})
    row = "%-36s  %-16s  %-11s  %-8s  %-19s  %s"
    lines = ["host %s, status written %s" % (snap.get("host", "?"),
                                            snap.get("written_at", "never")),
             "", row % ("DOMAIN", "NAME", "JOURNAL", "VERDICT", "SINCE (UTC)",
                                        "REASON")]
    unmonitored = snap.get("unmonitored", {})
    for rec in records:
        if rec.uuid in unmonitored:
            continue        # listed below, with why
        # The journal is the truth for verdicts; the snapshot adds what only
        # the running monitor knows (probes it cannot run, and why).
        live = monitored.get(rec.uuid, {})
        verdict = rec.last_verdict.value if rec.last_verdict else "-"
        reason = "; ".join(r for r in (rec.last_reason, live.get("capability", "")) if r)
        since = format_generated_time(rec.since)[:19] if rec.since else "-"
        lines.append(row % (rec.uuid, rec.name[:16], rec.state.value, verdict, since, reason))
    for uuid, why in sorted(unmonitored.items()):
        lines.append(row % (uuid, "", "UNMONITORED", "-", "-", why))
    lines += ["", "notifications:"]
    if not outbox:
        lines.append("  none")
    for e in outbox:
        detail = ""
        if e.last_error:
            label = "answer" if e.status == "delivered" else "last error"
            detail = "; %s: %s" % (label, e.last_error)
        lines.append("  #%d %s episode %d generated %s: %s after %d attempt(s)%s" % (
            e.id, e.notification.instance_uuid, e.episode, e.notification.generated_time,
            e.status, e.attempts, detail))
    return "\n".join(lines)
