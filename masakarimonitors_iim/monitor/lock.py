"""One monitor per journal: an exclusive lock beside the journal file.

Two monitors on one journal count every failure twice and both senders
POST the same notification, and nothing in SQLite stops them (each
transaction is fine on its own). So the monitor takes ``flock`` on
``<journal>.lock`` before it opens the database, without waiting, and
keeps it until it stops; a second one is refused at start-up with one
line naming the journal and the holder's pid.

``flock`` rather than a pid file alone: the kernel drops the lock when
the holder exits, however it exits (SIGKILL, OOM, power loss), so a
stale file never blocks a restart. The pid written into the file is only
for the message. The file is never deleted: a process could still hold
an open descriptor to a deleted lock file and "hold" a lock nobody else
sees. Readers (``masakari-iim status``) do not take the lock.
"""
from __future__ import annotations

import errno
import fcntl
import os

from masakarimonitors_iim.common.text import one_line

SUFFIX = ".lock"


class JournalLocked(Exception):
    """Another process holds the journal; the message is one line."""


def lock_path(journal_path: str) -> str:
    return journal_path + SUFFIX


class JournalLock:
    """Held from :meth:`acquire` until :meth:`release` (or the process ends)."""

    def __init__(self, journal_path: str) -> None:
        self.journal_path = journal_path
        self.path = lock_path(journal_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`JournalLocked`; an
        OSError (directory missing or read-only) propagates for the
        caller to report as it reports the database's own."""
        if self._fd is not None:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise JournalLocked(self._refusal(_read_pid(self.path))) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, b"%d\n" % os.getpid())
        except OSError:
            pass    # the lock is what counts; the pid is only for messages
        self._fd = fd

    def release(self) -> None:
        """Let another monitor start on this journal; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _refusal(self, pid: int | None) -> str:
        if pid is None:
            holder = "its pid is not written yet; `fuser -v %s` shows it" % self.path
        else:
            holder = "pid %d%s; `ps -o pid,args -p %d` shows it" % (pid, _command_of(pid), pid)
        return ("journal %s is in use by another process (%s): only one masakari-iim may "
                "use a journal; stop that one first, or give this one its own journal_path"
                % (self.journal_path, holder))


def _read_pid(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            text = f.read(32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _command_of(pid: int) -> str:
    """``, masakari-iim``: the holder's name, when /proc tells it."""
    try:
        with open("/proc/%d/comm" % pid, "rb") as f:
            name = f.read(64)
    except OSError:
        return ""
    return ", %s" % one_line(name.strip(), 40) if name.strip() else ""
