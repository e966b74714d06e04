"""The journal and the notification outbox, in one SQLite database.

One database, so that "this domain's episode is REPORTED" and "this
notification must be delivered" are written in one transaction: after a
crash (even SIGKILL or power loss) either both exist or neither does, and
the sender finds every undelivered notification on the next start. The
outbox row is unique on (instance_uuid, episode), so replaying a save can
never queue a second notification for the same episode, and a save that
would queue a *different* notification under an existing key raises
instead of dropping it.

``JournalStore(path, read_only=True)`` is for readers such as
``masakari-iim status``: it never creates, checks or migrates the file, so
it is safe next to a running monitor.
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import os
import sqlite3
import threading
from typing import Any
import urllib.parse

from masakarimonitors_iim.journal.machine import Record
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.notifier.base import Notification
from masakarimonitors_iim.verdict import Verdict

#: Bump with a migration in _MIGRATIONS when the schema changes.
SCHEMA_VERSION = 2

#: Seconds a writer waits for a lock held by another connection (e.g. a
#: status command reading the file) before giving up.
BUSY_TIMEOUT = 5.0

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
OUTBOX_STATUSES = (PENDING, DELIVERED, DEAD)

_SCHEMA_V1 = ["""
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
_SCHEMA_V2 = ["""
ALTER TABLE outbox ADD COLUMN maybe_landed INTEGER NOT NULL DEFAULT 0
""", """
UPDATE outbox SET maybe_landed = attempts
"""]

#: version reached -> statements that get there from the version before.
_MIGRATIONS: dict[int, list[str]] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}


class JournalStoreError(Exception):
    """The journal database cannot be used; the message is one line for the operator.

    Raised instead of a raw sqlite3 error so the command line can print
    what is wrong, with which file, and what to do, without a traceback.
    """


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """One notification and where its delivery stands.

    Delivered and dead rows are kept: status output shows them, and a dead
    letter is evidence an operator needs.

    ``attempts`` counts every attempt started (the sender records the start
    durably, before sending). ``maybe_landed`` counts those, made with the
    current ``generated_time``, that may have reached Masakari: the attempt
    is counted when it starts (a crash mid-attempt leaves it counted) and
    stays counted unless Masakari answered it with a 409 duplicate while no
    earlier attempt may have landed, i.e. it collided with a different,
    earlier notification and created nothing. Then the count drops to 0
    and the next attempt re-stamps ``generated_time`` (:attr:`restamp_due`).
    """

    id: int
    notification: Notification
    episode: int
    reason: str
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    delivered_at: float | None
    maybe_landed: int = 0

    @property
    def restamp_due(self) -> bool:
        """The last attempt collided in Masakari's duplicate window: the next
        one must carry a new ``generated_time``. Derived: attempts were
        made, and none of them may have landed."""
        return self.status == PENDING and self.attempts > 0 and self.maybe_landed == 0


class JournalStore:
    """Thread-safe access to the journal database at ``path``.

    One connection guarded by one lock: probe workers and the sender write
    a handful of small rows per second at most, so serialising them costs
    nothing and avoids SQLite's per-connection threading pitfalls.

    With ``read_only=True`` the file is opened with SQLite's ``mode=ro``:
    nothing is created, checked (no quick_check) or migrated, a missing
    file or one the monitor never initialised is refused with a one-line
    :class:`JournalStoreError`, and every write method raises one.
    """

    def __init__(self, path: str, busy_timeout: float = BUSY_TIMEOUT, *,
                 read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            if read_only:
                self._conn = self._connect_read_only(busy_timeout)
                self._conn.row_factory = sqlite3.Row
                self._check_read_only(busy_timeout)
            else:
                parent = os.path.dirname(os.path.abspath(path))
                os.makedirs(parent, exist_ok=True)
                self._conn = sqlite3.connect(path, timeout=busy_timeout,
                                             isolation_level=None,
                                             check_same_thread=False)
                self._conn.row_factory = sqlite3.Row
                self._setup(busy_timeout)
        except (sqlite3.Error, OSError) as e:
            self._close_quietly()
            raise self._error(e) from None
        except JournalStoreError:
            self._close_quietly()
            raise

    # -- opening ---------------------------------------------------------

    def _connect_read_only(self, busy_timeout: float) -> sqlite3.Connection:
        if not os.path.isfile(self.path):
            raise JournalStoreError(
                "journal database %s does not exist; has the monitor run "
                "with this configuration?" % self.path)
        uri = "file:%s?mode=ro" % urllib.parse.quote(os.path.abspath(self.path))
        return sqlite3.connect(uri, uri=True, timeout=busy_timeout,
                               isolation_level=None, check_same_thread=False)

    def _check_read_only(self, busy_timeout: float) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("PRAGMA busy_timeout = %d" % int(busy_timeout * 1000))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalStoreError(self._newer_message(version))
        if version < 1:
            raise JournalStoreError(
                "journal database %s has no journal in it yet; start the "
                "monitor once to initialise it" % self.path)

    def _setup(self, busy_timeout: float) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("PRAGMA busy_timeout = %d" % int(busy_timeout * 1000))
        # quick_check reads every page once: the file is small, and a
        # corrupt journal must stop us at start, not mid-episode.
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:3])
            raise JournalStoreError(self._corrupt_message(detail))
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalStoreError(
                "journal database %s: cannot switch to WAL mode (got %s); "
                "put it on a local filesystem" % (self.path, mode))
        # FULL: a commit is on disk before save() returns, so a reported
        # episode survives power loss, not just a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _migrate(self) -> None:
        conn = self._conn
        assert conn is not None
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalStoreError(self._newer_message(version))
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _MIGRATIONS[target]:
                    conn.execute(stmt)
                conn.execute("PRAGMA user_version = %d" % target)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _newer_message(self, version: int) -> str:
        return ("journal database %s has schema version %d, newer than this "
                "monitor understands (%d); upgrade the monitor or move the "
                "file aside" % (self.path, version, SCHEMA_VERSION))

    def _corrupt_message(self, detail: str) -> str:
        return ("journal database %s is unreadable (%s); stop the monitor and "
                "move the file aside (mv %s %s.broken), it is rebuilt on the "
                "next start: undelivered notifications in it are lost, so "
                "check Masakari for the affected instances"
                % (self.path, detail, self.path, self.path))

    def _error(self, e: BaseException) -> JournalStoreError:
        """Turn an sqlite3/OS error into one line that names the file and the fix."""
        text = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(
                e, sqlite3.OperationalError):
            return JournalStoreError(self._corrupt_message(text))
        if isinstance(e, sqlite3.OperationalError) and (
                "not a database" in text or "malformed" in text):
            return JournalStoreError(self._corrupt_message(text))
        if self.read_only:
            return JournalStoreError("journal database %s: %s; check that it "
                                     "is readable" % (self.path, text))
        return JournalStoreError(
            "journal database %s: %s; check that its directory exists, is "
            "writable and has free space" % (self.path, text))

    def _close_quietly(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    # -- plumbing ----------------------------------------------------------

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            conn = self._live()
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise self._error(e) from None

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]],
               check: Callable[[sqlite3.Connection, list[int]], None] | None = None,
               ) -> list[int]:
        """Run statements in one IMMEDIATE transaction; return their rowcounts.

        ``check(conn, counts)`` runs before COMMIT; whatever it raises rolls
        the whole transaction back and propagates.
        """
        with self._lock:
            conn = self._live()
            if self.read_only:
                raise JournalStoreError(
                    "journal database %s is open read-only" % self.path)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    counts = [conn.execute(sql, args).rowcount
                              for sql, args in statements]
                    if check is not None:
                        check(conn, counts)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return counts
            except sqlite3.Error as e:
                raise self._error(e) from None

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalStoreError("journal database %s is closed" % self.path)
        return self._conn

    # -- journal -----------------------------------------------------------

    def get(self, uuid: str) -> Record | None:
        """The stored record for ``uuid``, or None if the domain is new to us."""
        rows = self._query("SELECT * FROM journal WHERE uuid = ?", (uuid,))
        return _record(rows[0]) if rows else None

    def all(self) -> list[Record]:
        """Every stored record, by name: what status shows and startup reloads."""
        return [_record(r) for r in
                self._query("SELECT * FROM journal ORDER BY name, uuid")]

    def save(self, record: Record,
             notification: Notification | None = None) -> bool:
        """Store ``record`` and, atomically with it, queue ``notification``.

        The notification is keyed by (record.uuid, record.episode); saving
        the same notification again (same ``generated_time``) keeps the
        first row untouched and returns False. A *different* notification
        for a key that already has a row is never dropped silently: it
        raises :class:`JournalStoreError` and nothing is written (it means
        the episode counter went backwards; see :meth:`last_episode`).
        Returns whether a new outbox row was queued, so the caller wakes
        the sender only when there is something new.
        """
        statements: list[tuple[str, tuple[Any, ...]]] = [(
            "INSERT OR REPLACE INTO journal (uuid, name, state, failures, "
            "successes, episode, last_verdict, last_reason, since, "
            "first_failure_at, seen_healthy, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.uuid, record.name, record.state.value, record.failures,
             record.successes, record.episode,
             record.last_verdict.value if record.last_verdict else None,
             record.last_reason, record.since, record.first_failure_at,
             int(record.seen_healthy), record.updated_at))]
        if notification is not None:
            if notification.instance_uuid != record.uuid:
                raise ValueError("notification for %s saved with record %s"
                                 % (notification.instance_uuid, record.uuid))
            n = notification
            # ON CONFLICT DO NOTHING, not INSERT OR IGNORE: the latter
            # would also swallow a NOT NULL/CHECK failure and lose the row.
            statements.append((
                "INSERT INTO outbox (instance_uuid, episode, "
                "hostname, generated_time, type, event, vir_domain_event, "
                "reason, status, attempts, next_attempt_at, last_error, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, '', ?) "
                "ON CONFLICT (instance_uuid, episode) DO NOTHING",
                (n.instance_uuid, record.episode, n.hostname,
                 n.generated_time, n.type, n.event, n.vir_domain_event,
                 record.last_reason, PENDING, record.updated_at,
                 record.updated_at)))

        def same_or_new(conn: sqlite3.Connection, counts: list[int]) -> None:
            if notification is None or counts[1] == 1:
                return
            row = conn.execute(
                "SELECT generated_time FROM outbox WHERE instance_uuid = ? "
                "AND episode = ?", (record.uuid, record.episode)).fetchone()
            if row is not None and row[0] != notification.generated_time:
                raise JournalStoreError(
                    "journal database %s: instance %s episode %d already has "
                    "a notification generated %s, refusing to drop the new "
                    "one generated %s (episode numbering restarted?)"
                    % (self.path, record.uuid, record.episode, row[0],
                       notification.generated_time))

        counts = self._write(statements, same_or_new)
        return notification is not None and counts[1] == 1

    def forget(self, uuid: str) -> None:
        """Drop the domain's journal row (it was undefined).

        Its outbox rows stay: a notification already queued is still owed
        to Masakari even if the domain is gone.
        """
        self._write([("DELETE FROM journal WHERE uuid = ?", (uuid,))])

    def last_episode(self, uuid: str) -> int:
        """The highest episode in the outbox for ``uuid``, 0 if none.

        A record created for a domain the journal has no row for (new, or
        forgotten when it was undefined and since redefined, as Nova's hard
        reboot does) must start at this episode, or its next report reuses
        an episode number whose outbox row still exists. Pruned delivered
        rows no longer count, which is fine: their keys are free again.
        """
        rows = self._query("SELECT COALESCE(MAX(episode), 0) FROM outbox "
                           "WHERE instance_uuid = ?", (uuid,))
        return int(rows[0][0])

    # -- outbox ------------------------------------------------------------

    def due(self, now: float, limit: int = 50) -> list[OutboxEntry]:
        """Pending entries whose next attempt time has come, oldest first."""
        return [_entry(r) for r in self._query(
            "SELECT * FROM outbox WHERE status = ? AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?", (PENDING, now, limit))]

    def pending(self) -> list[OutboxEntry]:
        """Every entry not yet delivered nor given up, soonest first."""
        return [_entry(r) for r in self._query(
            "SELECT * FROM outbox WHERE status = ? "
            "ORDER BY next_attempt_at, id", (PENDING,))]

    def begin_attempt(self, id: int) -> int | None:
        """Durably record that an attempt is starting, before it is sent.

        Increments ``attempts`` and ``maybe_landed`` in their own committed
        transaction, so an attempt whose POST landed just before a crash is
        known after the restart. Returns ``maybe_landed`` as it was before
        this attempt (how many earlier attempts may have landed), or None
        if the row is no longer pending.
        """
        result: list[int] = []

        def before(conn: sqlite3.Connection, counts: list[int]) -> None:
            # Inside the transaction: the value just incremented, minus one.
            if counts[0] == 1:
                row = conn.execute("SELECT maybe_landed FROM outbox "
                                   "WHERE id = ?", (id,)).fetchone()
                result.append(int(row[0]) - 1)

        self._write([(
            "UPDATE outbox SET attempts = attempts + 1, "
            "maybe_landed = maybe_landed + 1 WHERE id = ? AND status = ?",
            (id, PENDING))], before)
        return result[0] if result else None

    def restamp(self, id: int, generated_time: str) -> bool:
        """Give a pending row a new ``generated_time`` (after a collision).

        Refused (False) when an attempt of the row may have landed
        (``maybe_landed`` > 0): Masakari may hold it under the old time,
        and a new time would make a genuine duplicate.
        """
        counts = self._write([(
            "UPDATE outbox SET generated_time = ? WHERE id = ? AND status = ? "
            "AND maybe_landed = 0", (generated_time, id, PENDING))])
        return counts[0] == 1

    def mark_collision(self, id: int, next_attempt_at: float,
                       error: str) -> bool:
        """Record that the attempt just made collided with a different, earlier
        notification (409 duplicate, no earlier attempt may have landed):
        it created nothing, so ``maybe_landed`` drops to 0, which makes
        the next attempt re-stamp the row (:attr:`OutboxEntry.restamp_due`).
        """
        counts = self._write([(
            "UPDATE outbox SET maybe_landed = 0, next_attempt_at = ?, "
            "last_error = ? WHERE id = ? AND status = ?",
            (next_attempt_at, error, id, PENDING))])
        return counts[0] == 1

    def mark_delivered(self, id: int, now: float, detail: str = "") -> bool:
        """Record that Masakari has it; False if the row was no longer pending.

        Does not count an attempt: :meth:`begin_attempt` did.
        """
        counts = self._write([(
            "UPDATE outbox SET status = ?, "
            "delivered_at = ?, last_error = ? WHERE id = ? AND status = ?",
            (DELIVERED, now, detail, id, PENDING))])
        return counts[0] == 1

    def mark_retry(self, id: int, attempts: int, next_attempt_at: float,
                   error: str) -> bool:
        """Record a failed attempt and when to try again.

        ``maybe_landed`` is left alone: a timeout or a 5xx may come after
        Masakari stored the notification.
        """
        counts = self._write([(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, "
            "last_error = ? WHERE id = ? AND status = ?",
            (attempts, next_attempt_at, error, id, PENDING))])
        return counts[0] == 1

    def mark_dead(self, id: int, reason: str, now: float) -> bool:
        """Give up on an entry Masakari refused; the row stays as a dead letter.

        ``now`` goes into ``delivered_at`` as the time the entry was
        settled, so status can show when it died. Does not count an
        attempt: :meth:`begin_attempt` did.
        """
        counts = self._write([(
            "UPDATE outbox SET status = ?, "
            "delivered_at = ?, last_error = ? WHERE id = ? AND status = ?",
            (DEAD, now, reason, id, PENDING))])
        return counts[0] == 1

    def outbox_rows(self, status: str | None = None) -> list[OutboxEntry]:
        """Outbox entries for status display, oldest first."""
        if status is None:
            rows = self._query("SELECT * FROM outbox ORDER BY id")
        else:
            if status not in OUTBOX_STATUSES:
                raise ValueError("unknown outbox status %r" % status)
            rows = self._query(
                "SELECT * FROM outbox WHERE status = ? ORDER BY id", (status,))
        return [_entry(r) for r in rows]

    def prune_delivered(self, before: float) -> int:
        """Delete delivered entries settled before ``before``; keep dead letters.

        Without this the outbox grows by one row per episode forever.
        """
        return self._write([(
            "DELETE FROM outbox WHERE status = ? AND delivered_at < ?",
            (DELIVERED, before))])[0]

    def close(self) -> None:
        """Close the connection; later calls raise JournalStoreError."""
        with self._lock:
            self._close_quietly()

    def __enter__(self) -> JournalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record(row: sqlite3.Row) -> Record:
    return Record(
        uuid=row["uuid"], name=row["name"], state=State(row["state"]),
        failures=row["failures"], successes=row["successes"],
        episode=row["episode"],
        last_verdict=Verdict(row["last_verdict"]) if row["last_verdict"] else None,
        last_reason=row["last_reason"], since=row["since"],
        first_failure_at=row["first_failure_at"],
        seen_healthy=bool(row["seen_healthy"]), updated_at=row["updated_at"])


def _entry(row: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"],
        notification=Notification(
            instance_uuid=row["instance_uuid"], hostname=row["hostname"],
            generated_time=row["generated_time"], event=row["event"],
            vir_domain_event=row["vir_domain_event"], type=row["type"]),
        episode=row["episode"], reason=row["reason"], status=row["status"],
        attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"], created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        # A read-only reader may face a v1 file the monitor has not
        # migrated yet: count every attempt, as the migration will.
        maybe_landed=(row["maybe_landed"] if "maybe_landed" in row.keys()
                      else row["attempts"]))
