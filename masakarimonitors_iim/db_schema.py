"""The tables of the monitor's database and how each older file reaches them.

Apart from :mod:`masakarimonitors_iim.db` because it changes for another
reason: a new column is a new entry here (and a bump of
``SCHEMA_VERSION``), while opening, locking and transactions stay as they
are. Each version's statements stay as they were shipped, forever: a file
written by any older monitor is brought forward by running the versions
it lacks, in order, each in its own transaction (``Database._migrate``).
"""
from __future__ import annotations

#: Bump with a migration in MIGRATIONS when the schema changes.
SCHEMA_VERSION = 4

# v1: one row per domain (the journal) and one per notification owed
# (the outbox, one per episode of an instance).
_V1 = ["""
CREATE TABLE journal (
    uuid             TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    state            TEXT NOT NULL,
    failures         INTEGER NOT NULL,
    successes        INTEGER NOT NULL,
    episode          INTEGER NOT NULL,
    last_verdict     TEXT,
    last_reason      TEXT NOT NULL,
    since            REAL NOT NULL,
    first_failure_at REAL,
    seen_healthy     INTEGER NOT NULL,
    updated_at       REAL NOT NULL
)""", """
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_uuid    TEXT NOT NULL,
    episode          INTEGER NOT NULL,
    hostname         TEXT NOT NULL,
    generated_time   TEXT NOT NULL,
    type             TEXT NOT NULL,
    event            TEXT NOT NULL,
    vir_domain_event TEXT NOT NULL,
    reason           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT NOT NULL,
    created_at       REAL NOT NULL,
    delivered_at     REAL,
    UNIQUE (instance_uuid, episode)
)""", """
CREATE INDEX outbox_due ON outbox (status, next_attempt_at)
"""]

# v2: maybe_landed counts the attempts, with the row's current
# generated_time, that may have reached Masakari (see OutboxEntry). Rows
# from v1 count every attempt they made: any of them may have landed.
_V2 = ["""
ALTER TABLE outbox ADD COLUMN maybe_landed INTEGER NOT NULL DEFAULT 0
""", """
UPDATE outbox SET maybe_landed = attempts
"""]

# v3: where Masakari took each notification: the uuid it gave it, its
# engine's last seen status and when it was looked at. v2 rows delivered
# with a uuid in their answer ("accepted as notification <uuid> (status
# ...)") get it back, so they are followed to their end too.
_V3 = ["""
ALTER TABLE outbox ADD COLUMN masakari_uuid TEXT NOT NULL DEFAULT ''
""", """
ALTER TABLE outbox ADD COLUMN engine_status TEXT NOT NULL DEFAULT ''
""", """
ALTER TABLE outbox ADD COLUMN engine_checked_at REAL
""", """
UPDATE outbox SET masakari_uuid = substr(last_error, 26, 36)
WHERE status = 'delivered' AND last_error LIKE
    'accepted as notification ________-____-____-____-____________ (status %'
"""]

# v4: why a due report is held by a guard (watch-only mode, restart
# budget, storm, ...) and which boot of the domain the journal last saw,
# so a restart the monitor was not running to see is still a new boot;
# boots counts the boots of a DISCOVERY (a reboot loop keeps its first
# boot's deadline). Older rows hold nothing and know no boot ("" is
# "unknown", never a change; 0 boots: the next restart is a first boot).
_V4 = ["""
ALTER TABLE journal ADD COLUMN held TEXT NOT NULL DEFAULT ''
""", """
ALTER TABLE journal ADD COLUMN boot_id TEXT NOT NULL DEFAULT ''
""", """
ALTER TABLE journal ADD COLUMN boots INTEGER NOT NULL DEFAULT 0
"""]

#: version reached -> statements that get there from the version before.
MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}
