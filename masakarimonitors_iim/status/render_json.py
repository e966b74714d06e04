"""``masakari-iim status --json``: the status for scripts.

The shape is a contract: fields are only ever added within a version;
renaming, removing or changing the meaning of one bumps ``version``.
Times are UTC in ISO 8601 (``2024-05-01T12:00:00Z``) or null when not
known; durations are seconds. Version 1::

    {
      "version": 1,
      "host": "compute-1",               # "" before the monitor wrote a snapshot
      "generated_at": TIME,              # when this status was read
      "journal": "/var/lib/.../iim-journal.sqlite",
      "journal_found": true,             # false: the monitor never ran with this config
      "snapshot_written_at": TIME|null,  # the running monitor's last snapshot
      "domains": [{
        "uuid": "...", "name": "instance-00000001", "display_name": "web-1",
        "state": "DISCOVERY"|"HEALTHY"|"FAILING"|"REPORTED"|"UNMONITORED",
        "since": TIME|null,              # in this journal state since
        "consecutive_failures": 0,
        "episode": 0,                    # failure episodes reported so far
        "verdict": "HEALTHY"|"FAILED"|"UNKNOWN"|"",   # the last round's
        "reason": "...",                 # the last round's reason
        "note": "...",                   # blocked probes, or why unmonitored
        "listed": true,                  # in the running monitor's last listing
        "probes": [{"name": "ping", "verdict": "HEALTHY", "reason": "",
                    "seconds": 0.003, "skipped": false, "at": TIME|null}],
        "startup_grace_until": TIME|null,
        "disconnect_grace_until": TIME|null,
        "held": "...",                   # why a due report is held ("" none)
        "boot": "...",                   # "booting, deadline in N s", "never came up ..."
        "agent_timeout": N|null          # seconds set in libvirt while suspect; null: default
      }],
      "notifications": [{
        "id": 1, "instance_uuid": "...", "name": "instance-00000001",
        "episode": 1, "generated_time": "2024-05-01T12:00:00.000000",
        "status": "pending"|"delivered"|"dead", "attempts": 1,
        "reason": "...", "last_error": "...",
        "created_at": TIME, "settled_at": TIME|null, "next_attempt_at": TIME,
        "masakari_uuid": "...",          # "" until Masakari answered with one
        "engine_status": "new"|"running"|"finished"|"failed"|"ignored"|"error"|"",
        "engine_checked_at": TIME|null,
        "overdue": false                 # pending after [callback] retry_max attempts
      }],
      "storm": null|{                    # the storm guard, from the monitor's snapshot
        "enabled": true, "holding": false,
        "since": TIME|null,              # when it tripped (holding) or last cleared
        "calm_since": TIME|null,         # holding, but below the trip condition since
        "failing": 0, "watched": 3,      # domains failing now, domains monitored
        "needed": 3,                     # failing domains that trip it
        "window": 120,                   # seconds
        "max_hold": 1800,                # seconds after which a hold releases by itself
        "releases_at": TIME|null         # holding: the release at the latest
      },
      "backlog": null|{                  # probe rounds waiting for an agent slot
        "overdue": 0, "oldest_seconds": 0.0,
        "healthy": 0, "suspect": 0,      # of them, by lane
        "slots": 4, "suspect_slots": 3   # probe_workers; the share of domains not healthy
      }
    }

``generated_time`` is the notification's own field, exactly as sent to
Masakari (UTC, no zone suffix).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from masakarimonitors_iim.status.model import (
    DomainView, NotificationView, StatusView, StormView)

VERSION = 1


def render(view: StatusView) -> str:
    return json.dumps(as_dict(view), indent=2)


def as_dict(view: StatusView) -> dict[str, Any]:
    return {
        "version": VERSION,
        "host": view.host,
        "generated_at": iso(view.now),
        "journal": view.journal_path,
        "journal_found": view.journal_found,
        "snapshot_written_at": iso(view.snapshot_at),
        "domains": [_domain(d) for d in view.domains],
        "notifications": [_notification(n) for n in view.notifications],
        "storm": _storm(view.storm),
        "backlog": dataclasses.asdict(view.backlog) if view.backlog else None,
    }


def _storm(s: StormView | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return dict(dataclasses.asdict(s), since=iso(s.since), calm_since=iso(s.calm_since),
                releases_at=iso(s.releases_at))


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(
        timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _domain(d: DomainView) -> dict[str, Any]:
    return {
        "uuid": d.uuid, "name": d.name, "display_name": d.display_name,
        "state": d.state, "since": iso(d.since),
        "consecutive_failures": d.failures, "episode": d.episode,
        "verdict": d.verdict, "reason": d.reason, "note": d.note, "listed": d.listed,
        "probes": [dict(dataclasses.asdict(p), seconds=round(p.seconds, 6), at=iso(p.at))
                   for p in d.probes],
        "startup_grace_until": iso(d.startup_grace_until),
        "disconnect_grace_until": iso(d.disconnect_grace_until),
        "held": d.held, "boot": d.boot, "agent_timeout": d.agent_timeout,
    }


def _notification(n: NotificationView) -> dict[str, Any]:
    return {
        "id": n.id, "instance_uuid": n.instance_uuid, "name": n.name,
        "episode": n.episode, "generated_time": n.generated_time,
        "status": n.status, "attempts": n.attempts,
        "reason": n.reason, "last_error": n.last_error,
        "created_at": iso(n.created_at), "settled_at": iso(n.settled_at),
        "next_attempt_at": iso(n.next_attempt_at),
        "masakari_uuid": n.masakari_uuid, "engine_status": n.engine_status,
        "engine_checked_at": iso(n.engine_checked_at), "overdue": n.overdue,
    }
