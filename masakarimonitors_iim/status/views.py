"""What ``masakari-iim status`` shows, as plain values: the one shape
both renderers (:mod:`.render_text`, :mod:`.render_json`) read.

:mod:`.model` builds these from the journal, the outbox and the running
monitor's snapshot, and has cleaned every text in them (one line,
bounded) before a renderer sees it.
"""
from __future__ import annotations

import dataclasses

UNMONITORED = "UNMONITORED"
#: Cap of a name or display name: room for any sane one, still one line.
NAME_LIMIT = 255


@dataclasses.dataclass(frozen=True)
class ProbeView:
    """One probe's last run: its own verdict, not the round's."""

    name: str
    verdict: str
    reason: str
    seconds: float
    #: the probe did not run: the guest blocks an RPC it needs
    skipped: bool
    #: wall time the round was applied; None if the snapshot lacks it
    at: float | None


@dataclasses.dataclass(frozen=True)
class DomainView:
    uuid: str
    name: str
    display_name: str
    #: the journal state (DISCOVERY, HEALTHY, FAILING, REPORTED) or UNMONITORED
    state: str
    since: float | None
    failures: int
    episode: int
    #: the last round's verdict and reason, from the journal ("" if none)
    verdict: str
    reason: str
    #: what the running monitor adds: blocked probes, why unmonitored
    note: str
    #: listed by the running monitor's last snapshot (monitored or not)
    listed: bool
    probes: tuple[ProbeView, ...] = ()
    startup_grace_until: float | None = None
    disconnect_grace_until: float | None = None
    #: why a due report is held by a guard ("" when none), from the journal
    held: str = ""
    #: "booting, deadline in N s" / "never came up ..." while in DISCOVERY
    boot: str = ""
    #: libvirt's agent response timeout the monitor set on the domain
    #: (only while its agent is suspect); None: libvirt's default
    agent_timeout: float | None = None


@dataclasses.dataclass(frozen=True)
class NotificationView:
    id: int
    instance_uuid: str
    name: str
    episode: int
    generated_time: str
    status: str
    attempts: int
    reason: str
    last_error: str
    created_at: float
    settled_at: float | None
    next_attempt_at: float
    masakari_uuid: str
    engine_status: str
    engine_checked_at: float | None
    #: still pending after ``[callback] retry_max`` attempts: never dropped,
    #: but an operator should look (Masakari unreachable or refusing)
    overdue: bool = False


@dataclasses.dataclass(frozen=True)
class StormView:
    """The storm guard as the running monitor last saw it
    (:mod:`masakarimonitors_iim.guards.storm`)."""

    enabled: bool
    holding: bool
    #: when it tripped (holding) or last cleared; None: never
    since: float | None
    #: holding, but below the trip condition since; None otherwise
    calm_since: float | None
    failing: int
    watched: int
    #: failing domains that trip it, with this many watched
    needed: int
    window: float
    #: seconds after which a hold releases by itself; 0: not in the snapshot
    max_hold: float = 0.0
    #: holding: when it releases the held reports at the latest
    releases_at: float | None = None


@dataclasses.dataclass(frozen=True)
class BacklogView:
    """Probe rounds due and waiting for an agent slot, as the running
    monitor last wrote (:mod:`masakarimonitors_iim.monitor.backlog`)."""

    overdue: int
    oldest_seconds: float
    healthy: int
    suspect: int
    slots: int
    suspect_slots: int


@dataclasses.dataclass(frozen=True)
class StatusView:
    now: float
    journal_path: str
    journal_found: bool
    host: str
    #: when the running monitor last wrote its snapshot; None: never
    snapshot_at: float | None
    domains: tuple[DomainView, ...]
    notifications: tuple[NotificationView, ...]
    #: None: no snapshot, or one from a monitor without the guard
    storm: StormView | None = None
    #: None: no snapshot, or one from a monitor without a backlog count
    backlog: BacklogView | None = None

