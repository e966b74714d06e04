"""Run the real ``masakari-iim`` process against a running testbed.

Used by the end-to-end tests and by the demo, so both exercise the monitor
exactly as an operator runs it: a config file, a console script, signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from testbed import Testbed


def _default_binary() -> str:
    """The console script installed next to the interpreter running us
    (the project's .venv)."""
    return str(Path(sys.executable).with_name("masakari-iim"))


class MonitorProcess:
    """One ``masakari-iim`` process with its own config, journal and log.

    ``options`` adds or overrides config entries: {"group": {"key": "value"}}.
    Restarting keeps the journal, as a restart on a compute host would.
    """

    def __init__(self, testbed: Testbed, workdir: Path,
                 options: dict[str, dict[str, str]] | None = None,
                 binary: str | None = None) -> None:
        self.testbed = testbed
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or _default_binary()
        self.config_path = self.workdir / "masakarimonitors.conf"
        self.log_path = self.workdir / "masakari-iim.log"
        self.journal_path = self.workdir / "state" / "iim-journal.sqlite"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(options or {})

    def write_config(self, options: dict[str, dict[str, str]]) -> None:
        groups: dict[str, dict[str, str]] = {
            "DEFAULT": {"hostname": self.testbed.hostname,
                        "log_file": str(self.log_path), "debug": "false"},
            "libvirt": {"connection_uri": self.testbed.libvirt_uri},
            "introspectiveinstancemonitor": {
                "journal_path": str(self.journal_path),
                "guest_monitoring_interval": "1",
                "guest_monitoring_timeout": "1",
                "guest_monitoring_failure_threshold": "3",
            },
            "callback": {"retry_interval": "1", "max_retry_interval": "5"},
            "api": {"auth_type": "none", "endpoint": self.testbed.masakari_endpoint,
                    "timeout": "10"},
        }
        for group, values in options.items():
            groups.setdefault(group, {}).update(values)
        lines = []
        for group, values in groups.items():
            lines.append(f"[{group}]")
            lines.extend(f"{k} = {v}" for k, v in values.items())
            lines.append("")
        self.config_path.write_text("\n".join(lines))

    # -- process control ----------------------------------------------------
    def start(self) -> None:
        if self.running:
            raise RuntimeError("masakari-iim is already running")
        out = open(self.workdir / "masakari-iim.stdout", "ab")
        self.proc = subprocess.Popen([self.binary, "--config-file", str(self.config_path)],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.wait_log("journal:", timeout=30)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, as an init system would; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as after a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def reload(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    # -- observation ---------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float, after: int = 0) -> None:
        """Until ``text`` appears in the log past offset ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"masakari-iim exited with {self.proc.returncode}; "
                                   f"log: {self.log_path}")
            time.sleep(0.2)
        raise TimeoutError(f"{text!r} not in {self.log_path} after {timeout}s")

    def status(self) -> str:
        """``masakari-iim status`` output, as an operator would read it."""
        out = subprocess.run([self.binary, "status", "--config-file", str(self.config_path)],
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout
