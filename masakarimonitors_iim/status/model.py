"""One view of what the monitor is doing, from the journal, the outbox and
the snapshot the running monitor writes.

:func:`build_view` is pure (table-tested); :func:`load` is the only part
that reads files, and it never writes: the database is opened read-only
(no schema check, no migration under a running monitor) and the snapshot
is only read. Every text that may come from a guest, a user (Nova display
names) or a server passes through :func:`one_line` here, so both
renderers get clean text.

The view's shape is in :mod:`.views`; its names are re-exported here for
the modules that import them from this one.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Mapping

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal.machine import Record
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.outbox.store import PENDING, OutboxEntry, OutboxStore
from masakarimonitors_iim.status.snapshot import read_snapshot, status_path
from masakarimonitors_iim.status.views import (
    NAME_LIMIT,
    UNMONITORED,
    BacklogView,
    DomainView,
    NotificationView,
    ProbeView,
    StatusView,
    StormView,
)

__all__ = ["NAME_LIMIT", "UNMONITORED", "BacklogView", "DomainView", "NotificationView",
           "ProbeView", "StatusView", "StormView", "build_view", "load", "select"]


def load(journal_path: str, now: float, retry_max: int | None = None) -> StatusView:
    """Read the journal and the snapshot; never write either."""
    snap = read_snapshot(status_path(journal_path)) or {}
    if not os.path.exists(journal_path):
        return build_view([], [], snap, now, journal_path, journal_found=False)
    with Database(journal_path, read_only=True) as db:
        records = JournalStore(db).all()
        entries = OutboxStore(db).rows()
    return build_view(records, entries, snap, now, journal_path, retry_max=retry_max)


def build_view(records: Iterable[Record], entries: Iterable[OutboxEntry],
               snap: Mapping[str, Any], now: float, journal_path: str,
               journal_found: bool = True, retry_max: int | None = None) -> StatusView:
    """Journal rows, outbox rows and the snapshot as one view.

    The journal is the truth for states and verdicts; the snapshot adds
    what only the running monitor knows. An unmonitored domain shows why
    instead of its journal row, whose verdicts are from when it was
    monitored. Domains are sorted by name, then uuid. ``retry_max`` (the
    configuration's) marks pending notifications overdue.
    """
    monitored = _mapping(snap.get("monitored"))
    unmonitored = _mapping(snap.get("unmonitored"))
    unmonitored_names = _mapping(snap.get("unmonitored_names"))
    domains = []
    names: dict[str, str] = {}
    for rec in records:
        names[rec.uuid] = _clean(rec.name, NAME_LIMIT)
        if rec.uuid in unmonitored:
            continue
        live = _mapping(monitored.get(rec.uuid))
        domains.append(DomainView(
            uuid=rec.uuid, name=names[rec.uuid],
            display_name=_clean(live.get("display_name"), NAME_LIMIT),
            state=rec.state.value, since=rec.since or None, failures=rec.failures,
            episode=rec.episode,
            verdict=rec.last_verdict.value if rec.last_verdict else "",
            reason=_clean(rec.last_reason), note=_clean(live.get("capability")),
            listed=rec.uuid in monitored,
            probes=tuple(_probe(p) for p in _list(live.get("probes"))),
            startup_grace_until=_time(live.get("startup_grace_until")),
            disconnect_grace_until=_time(live.get("disconnect_grace_until")),
            held=_clean(rec.held),
            agent_timeout=_time(live.get("agent_timeout")),
            boot=_boot(rec, _time(live.get("boot_deadline")), live.get("boot_report"),
                       now)))
    for uuid, why in unmonitored.items():
        seen = _mapping(unmonitored_names.get(uuid))
        domains.append(DomainView(
            uuid=_clean(uuid), name=_clean(seen.get("name"), NAME_LIMIT) or names.get(uuid, ""),
            display_name=_clean(seen.get("display_name"), NAME_LIMIT), state=UNMONITORED,
            since=None, failures=0, episode=0, verdict="", reason="", note=_clean(why),
            listed=True))
    domains.sort(key=lambda d: (d.name, d.uuid))
    return StatusView(
        now=now, journal_path=journal_path, journal_found=journal_found,
        host=_clean(snap.get("host"), NAME_LIMIT), snapshot_at=_time(snap.get("written_at")),
        domains=tuple(domains),
        notifications=tuple(_notification(e, names, retry_max) for e in entries),
        storm=_storm(snap.get("storm")), backlog=_backlog(snap.get("backlog")))


def _backlog(raw: Any) -> BacklogView | None:
    if not isinstance(raw, Mapping):
        return None
    lanes = _mapping(raw.get("lanes"))
    return BacklogView(overdue=_count(raw.get("overdue")),
                       oldest_seconds=_time(raw.get("oldest_seconds")) or 0.0,
                       healthy=_count(lanes.get("healthy")), suspect=_count(lanes.get("suspect")),
                       slots=_count(raw.get("slots")),
                       suspect_slots=_count(raw.get("suspect_slots")))


def _storm(raw: Any) -> StormView | None:
    if not isinstance(raw, Mapping):
        return None
    return StormView(enabled=raw.get("enabled") is True, holding=raw.get("holding") is True,
                     since=_time(raw.get("since")), calm_since=_time(raw.get("calm_since")),
                     failing=_count(raw.get("failing")), watched=_count(raw.get("watched")),
                     needed=_count(raw.get("needed")), window=_time(raw.get("window")) or 0.0,
                     max_hold=_time(raw.get("max_hold")) or 0.0,
                     releases_at=_time(raw.get("releases_at")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def select(view: StatusView, domain: str) -> StatusView | None:
    """The view of the one domain whose uuid, name or display name is
    ``domain``, with its notifications; None if there is none."""
    wanted = [d for d in view.domains if domain in (d.uuid, d.name, d.display_name)]
    if not wanted:
        return None
    uuids = {d.uuid for d in wanted}
    return dataclasses.replace(
        view, domains=tuple(wanted),
        notifications=tuple(n for n in view.notifications if n.instance_uuid in uuids))


def _notification(e: OutboxEntry, names: Mapping[str, str],
                  retry_max: int | None) -> NotificationView:
    n = e.notification
    return NotificationView(
        id=e.id, instance_uuid=n.instance_uuid, name=names.get(n.instance_uuid, ""),
        episode=e.episode, generated_time=n.generated_time, status=e.status,
        attempts=e.attempts, reason=_clean(e.reason), last_error=_clean(e.last_error),
        created_at=e.created_at, settled_at=e.delivered_at,
        next_attempt_at=e.next_attempt_at,
        masakari_uuid=_clean(e.masakari_uuid, 64), engine_status=_clean(e.engine_status, 16),
        engine_checked_at=e.engine_checked_at,
        overdue=(e.status == PENDING and retry_max is not None
                 and e.attempts >= max(retry_max, 1)))


def _boot(rec: Record, seconds: float | None, boot_report: Any, now: float) -> str:
    """Where a domain in DISCOVERY stands against its boot deadline (the
    running monitor's snapshot says how long it is; the journal's
    DISCOVERY ``since`` is when the boot was seen)."""
    if rec.state is not State.DISCOVERY or seconds is None:
        return ""
    deadline = rec.since + seconds
    loop = " (%d restarts)" % (rec.boots - 1) if rec.boots > 1 else ""
    if now < deadline:
        return "booting%s, deadline in %d s" % (loop, max(1, int(deadline - now + 0.999)))
    if rec.seen_healthy:
        return "never came up%s: its agent answered in an earlier boot" % loop
    if boot_report == "always":
        return ("never came up%s: its agent never answered (reported: boot_report always)"
                % loop)
    return ("never came up%s: its agent never answered (not reported: boot_report "
            "seen-before)" % loop)


def _probe(raw: Any) -> ProbeView:
    p = _mapping(raw)
    seconds = _time(p.get("seconds"))
    return ProbeView(name=_clean(p.get("name"), 64), verdict=_clean(p.get("verdict"), 16),
                     reason=_clean(p.get("reason")), seconds=seconds or 0.0,
                     skipped=bool(p.get("skipped")), at=_time(p.get("at")))


def _clean(value: Any, limit: int = 300) -> str:
    return one_line(value, limit) if value else ""


def _time(value: Any) -> float | None:
    """A number from the snapshot, or None: an older monitor may have
    written something else (a formatted time) or nothing."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
