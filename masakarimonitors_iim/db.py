"""The monitor's one SQLite database, holding the journal and the outbox.

One file, so that "this domain's episode is REPORTED" and "this
notification must be delivered" are written in one transaction: after a
crash (even SIGKILL or power loss) either both exist or neither does.
Opening, checking, migrating and transactions live here; the tables and
their history belong to ``db_schema``, what the rows mean to
``journal.store`` and ``outbox.store``.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
import sqlite3
import threading
from typing import Any
import urllib.parse

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.db_schema import MIGRATIONS
from masakarimonitors_iim.db_schema import SCHEMA_VERSION

#: Seconds a writer waits for a lock held by another connection (e.g. a
#: status command reading the file) before giving up.
BUSY_TIMEOUT = 5.0

#: Cap of an sqlite/OS error text quoted in a DatabaseError: room for a
#: long path, still one readable line.
_MAX_ERROR = 1000


class DatabaseError(Exception):
    """The journal database cannot be used; the message is one line for the operator.

    Raised instead of a raw sqlite3 error so the command line can print
    what is wrong, with which file, and what to do, without a traceback.
    """


class Transaction:
    """Statements of one BEGIN IMMEDIATE ... COMMIT (:meth:`Database.transaction`).

    Valid only inside its ``with`` block, in the thread that opened it:
    anywhere else a statement would run outside the lock and the transaction.
    """

    def __init__(self, db: Database, conn: sqlite3.Connection) -> None:
        self._db = db
        self._conn: sqlite3.Connection | None = conn
        self._owner = threading.get_ident()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one statement; return its rowcount."""
        with self._db._translated():
            return self._live().execute(sql, args).rowcount

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows as this transaction sees them, its own writes included."""
        with self._db._translated():
            return self._live().execute(sql, args).fetchall()

    def _live(self) -> sqlite3.Connection:
        if self._conn is None or self._owner != threading.get_ident():
            raise DatabaseError("journal database %s: transaction used outside "
                                "its with block" % self._db.path)
        return self._conn


class Database:
    """Thread-safe access to the journal database at ``path``.

    One connection guarded by one lock: the scheduler thread and the
    sender write a handful of small rows per second at most, so
    serialising them costs nothing and avoids SQLite's per-connection
    threading pitfalls. Re-entrant, so a read inside an open transaction
    of the same thread sees it instead of deadlocking.

    ``read_only=True`` is for readers such as ``masakari-iim status``, safe
    beside a running monitor: SQLite's ``mode=ro``, nothing created,
    checked or migrated, a missing or uninitialised file refused, and
    every transaction refused, each with a one-line :class:`DatabaseError`.
    """

    def __init__(self, path: str, busy_timeout: float = BUSY_TIMEOUT, *,
                 read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        try:
            if read_only:
                self._conn = self._connect_read_only(busy_timeout)
            else:
                parent = os.path.dirname(os.path.abspath(path))
                os.makedirs(parent, exist_ok=True)
                self._conn = sqlite3.connect(path, timeout=busy_timeout,
                                             isolation_level=None,
                                             check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA busy_timeout = %d" % int(busy_timeout * 1000))
            if read_only:
                self._check_read_only()
            else:
                self._setup()
        except (sqlite3.Error, OSError) as e:
            self._close_quietly()
            raise self._error(e) from None
        except DatabaseError:
            self._close_quietly()
            raise

    # -- using -------------------------------------------------------------

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of one read, outside any transaction of another thread."""
        with self._lock, self._translated():
            return self._live().execute(sql, args).fetchall()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All statements of the block commit together or not at all.

        BEGIN IMMEDIATE takes the write lock up front, so two writers never
        deadlock upgrading a read. Whatever the block raises rolls the
        whole transaction back and propagates.
        """
        with self._lock:
            conn = self._live()
            if self.read_only:
                raise DatabaseError(
                    "journal database %s is open read-only" % self.path)
            if conn.in_transaction:
                raise DatabaseError(
                    "journal database %s: a transaction is already open in "
                    "this thread; pass it on instead of opening another"
                    % self.path)
            with self._translated():
                conn.execute("BEGIN IMMEDIATE")
                tx = Transaction(self, conn)
                try:
                    yield tx
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                finally:
                    tx._conn = None

    def close(self) -> None:
        """Close the connection; later calls raise DatabaseError."""
        with self._lock:
            self._close_quietly()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError("journal database %s is closed" % self.path)
        return self._conn

    # -- opening -----------------------------------------------------------

    def _connect_read_only(self, busy_timeout: float) -> sqlite3.Connection:
        if not os.path.isfile(self.path):
            raise DatabaseError(
                "journal database %s does not exist; has the monitor run "
                "with this configuration?" % self.path)
        uri = "file:%s?mode=ro" % urllib.parse.quote(os.path.abspath(self.path))
        return sqlite3.connect(uri, uri=True, timeout=busy_timeout,
                               isolation_level=None, check_same_thread=False)

    def _check_read_only(self) -> None:
        if self._version() < 1:
            raise DatabaseError(
                "journal database %s has no journal in it yet; start the "
                "monitor once to initialise it" % self.path)

    def _setup(self) -> None:
        conn = self._live()
        # quick_check reads every page once: the file is small, and a
        # corrupt journal must stop us at start, not mid-episode.
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:3])
            raise DatabaseError(self._corrupt_message(detail))
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseError(
                "journal database %s: cannot switch to WAL mode (got %s); "
                "put it on a local filesystem" % (self.path, mode))
        # FULL: a commit is on disk before the transaction returns, so a
        # reported episode survives power loss, not just a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _migrate(self) -> None:
        conn = self._live()
        for target in range(self._version() + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[target]:
                    conn.execute(stmt)
                conn.execute("PRAGMA user_version = %d" % target)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _version(self) -> int:
        """The file's schema version, refused when newer than this code."""
        version = int(self._live().execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                "journal database %s has schema version %d, newer than this "
                "monitor understands (%d); upgrade the monitor or move the "
                "file aside" % (self.path, version, SCHEMA_VERSION))
        return version

    # -- errors ------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """sqlite3 errors of the block leave it as a DatabaseError."""
        try:
            yield
        except sqlite3.Error as e:
            raise self._error(e) from None

    def _corrupt_message(self, detail: str) -> str:
        return ("journal database %s is unreadable (%s); stop the monitor and "
                "move the file aside (mv %s %s.broken), it is rebuilt on the "
                "next start: undelivered notifications in it are lost, so "
                "check Masakari for the affected instances"
                % (self.path, detail, self.path, self.path))

    def _error(self, e: BaseException) -> DatabaseError:
        """Turn an sqlite3/OS error into one line that names the file and the fix."""
        text = one_line(e, _MAX_ERROR) or type(e).__name__
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(
                e, sqlite3.OperationalError):
            return DatabaseError(self._corrupt_message(text))
        if isinstance(e, sqlite3.OperationalError) and (
                "not a database" in text or "malformed" in text):
            return DatabaseError(self._corrupt_message(text))
        if self.read_only:
            return DatabaseError("journal database %s: %s; check that it "
                                 "is readable" % (self.path, text))
        return DatabaseError(
            "journal database %s: %s; check that its directory exists, is "
            "writable and has free space" % (self.path, text))

    def _close_quietly(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
