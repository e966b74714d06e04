"""Process helpers shared by every testbed component.

Everything the testbed launches is a long-running daemon that must not outlive
the testbed, so each one is started in its own session (process group) and
stopped by signalling that group. A pid file alone is not trusted: before a
signal is sent the process' command line is checked, so a recycled pid that
now belongs to something else is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Default timeout for short helper commands (virsh, dpkg-query, ...).
SHORT_TIMEOUT = 60.0


class TestbedError(RuntimeError):
    """Raised when a testbed component cannot be installed, started or used."""

    __test__ = False  # keep pytest from collecting it where it is imported


def run(
    argv: Sequence[str],
    *,
    timeout: float = SHORT_TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a mandatory timeout.

    Output is captured so that a failure can be reported with its stderr
    instead of a bare exit code.
    """
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise TestbedError(
            f"command failed ({proc.returncode}): {' '.join(argv)}\n"
            f"stdout: {proc.stdout.strip()[-2000:]}\nstderr: {proc.stderr.strip()[-2000:]}"
        )
    return proc


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    There is a small window in which another process could take it; the
    testbed accepts that rather than hard-coding ports that may be in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str,
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` on timeout.

    ``alive`` lets the caller abort early when the process it waits for has
    already died, which turns a 30 s timeout into an immediate, clear error.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise TestbedError(f"{what}: process exited")
        if time.monotonic() > deadline:
            raise TestbedError(f"{what}: not ready after {timeout}s")
        time.sleep(interval)


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def pid_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 (after the parenthesised comm, which may contain spaces) is the state.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_matches(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its cmdline contains ``marker``.

    Only for deciding whether a recorded pid may be signalled: while a
    process execs, its cmdline can read as empty for a moment.
    """
    return pid_running(pid) and marker in _cmdline(pid)


@dataclass
class Daemon:
    """A daemon started by the testbed, identified by pid and a cmdline marker.

    The record is plain data so it can be written to the testbed state file
    and used by another process (``python -m testbed down``) to stop it.
    """

    name: str
    pid: int
    marker: str

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        marker: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Daemon:
        """Start ``argv`` in a new session with stdout/stderr going to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=None if env is None else dict(env),
                cwd=cwd,
            )
        # The daemon must outlive this process when started by the CLI, so
        # only the pid is kept; the Popen object is kept aside just to reap
        # the exit status (see reap_children).
        _children.append(proc)
        return cls(name=name, pid=proc.pid, marker=marker or str(argv[0]))

    def alive(self) -> bool:
        """True while the daemon process itself runs (cheap, for polling).

        Does not check the marker: a pid is not recycled within the seconds
        a startup wait lasts, and cmdlines flicker during exec.
        """
        return pid_running(self.pid)

    def ours(self) -> bool:
        """True if the recorded pid still is this daemon (safe to signal)."""
        return pid_matches(self.pid, self.marker)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the daemon's process group, SIGKILL it after ``timeout``.

        Signalling the group also stops worker children (masakari-api forks
        one) that would otherwise be orphaned, even when the leader itself
        has already died: Linux does not hand out a pid that is still some
        group's id, so a live group with our pid as its id is ours.
        """
        if not self.ours() and not _group_alive(self.pid):
            reap_children()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive() and not _group_alive(self.pid):
                reap_children()
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        wait_for(f"{self.name} to die after SIGKILL", lambda: not self.alive(), 5.0)
        reap_children()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies; treat a group of only zombies as dead.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


_children: list[subprocess.Popen[bytes]] = []


def reap_children() -> None:
    """Collect exit statuses of daemons that have exited (avoids zombies)."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
