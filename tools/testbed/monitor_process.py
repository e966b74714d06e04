"""Run the real ``masakari-iim`` process against a running testbed.

Used by the end-to-end tests and by the demo, so both exercise the monitor
exactly as an operator runs it: a config file, a console script, signals,
and ``masakari-iim status`` to see what it is doing.
"""

from __future__ import annotations

import dataclasses
import json
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


# -- ``masakari-iim status`` as data -------------------------------------------
# Read from ``masakari-iim status --json`` (its shape is versioned and
# documented in masakarimonitors_iim.status.render_json), not the text table.


@dataclasses.dataclass(frozen=True)
class DomainRow:
    uuid: str
    name: str
    journal: str  # DISCOVERY, HEALTHY, FAILING, REPORTED or UNMONITORED
    verdict: str  # HEALTHY, FAILED, UNKNOWN or "-"
    reason: str


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    id: int
    uuid: str
    episode: int
    generated: str
    status: str  # pending, delivered, dead
    attempts: int
    detail: str


@dataclasses.dataclass(frozen=True)
class Status:
    """``masakari-iim status`` parsed; ``text`` is the raw output for messages."""

    text: str
    domains: dict[str, DomainRow]
    outbox: list[OutboxRow]

    def domain(self, uuid: str) -> DomainRow | None:
        return self.domains.get(uuid)

    def outbox_for(self, uuid: str) -> list[OutboxRow]:
        return [row for row in self.outbox if row.uuid == uuid]


def parse_status(text: str) -> Status:
    """``masakari-iim status --json`` output as rows; the reason of a row
    is the journal's reason and the monitor's note (blocked probes, why
    unmonitored), as the text table shows them."""
    data = json.loads(text)
    if data.get("version") != 1:
        raise ValueError(f"masakari-iim status --json: unknown version {data.get('version')}")
    domains = {
        d["uuid"]: DomainRow(
            uuid=d["uuid"],
            name=d["name"],
            journal=d["state"],
            verdict=d["verdict"] or "-",
            reason="; ".join(r for r in (d["reason"], d["note"]) if r),
        )
        for d in data["domains"]
    }
    outbox = [
        OutboxRow(
            id=n["id"],
            uuid=n["instance_uuid"],
            episode=n["episode"],
            generated=n["generated_time"],
            status=n["status"],
            attempts=n["attempts"],
            detail=n["last_error"],
        )
        for n in data["notifications"]
    ]
    return Status(text=text, domains=domains, outbox=outbox)


class MonitorProcess:
    """One ``masakari-iim`` process with its own config, journal and log.

    ``options`` adds or overrides config entries: {"group": {"key": "value"}}.
    ``policy`` (YAML text) is written to ``WORKDIR/iim-policy.yaml`` and set as
    ``[introspectiveinstancemonitor] policy_file``; :meth:`write_policy` then
    :meth:`reload` changes it under a running monitor.
    ``run_command`` runs something else with the same config file instead of
    ``masakari-iim`` (``--config-file PATH`` is appended), e.g. masakari-monitors'
    ``masakari-introspectiveinstancemonitor`` loading this project's manager;
    ``masakari-iim status`` (``binary``) still reads what it does.
    Restarting keeps the journal, as a restart on a compute host would.
    """

    def __init__(
        self,
        testbed: Testbed,
        workdir: Path,
        options: dict[str, dict[str, str]] | None = None,
        binary: str | None = None,
        policy: str | None = None,
        run_command: list[str] | None = None,
    ) -> None:
        self.testbed = testbed
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or _default_binary()
        self.run_command = list(run_command or [self.binary])
        self.config_path = self.workdir / "masakarimonitors.conf"
        self.log_path = self.workdir / "masakari-iim.log"
        self.journal_path = self.workdir / "state" / "iim-journal.sqlite"
        self.policy_path = self.workdir / "iim-policy.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        #: Seconds the last :meth:`stop` took from SIGTERM to exit.
        self.last_stop_seconds: float | None = None
        options = {group: dict(values) for group, values in (options or {}).items()}
        if policy is not None:
            self.write_policy(policy)
            options.setdefault("introspectiveinstancemonitor", {})["policy_file"] = str(
                self.policy_path
            )
        self.write_config(options)

    def write_config(self, options: dict[str, dict[str, str]]) -> None:
        groups: dict[str, dict[str, str]] = {
            "DEFAULT": {
                "hostname": self.testbed.hostname,
                "log_file": str(self.log_path),
                "debug": "false",
            },
            "libvirt": {"connection_uri": self.testbed.libvirt_uri},
            "introspectiveinstancemonitor": {
                "journal_path": str(self.journal_path),
                "guest_monitoring_interval": "1",
                "guest_monitoring_timeout": "1",
                "guest_monitoring_failure_threshold": "3",
                # Shorter than the default 120 s so a test of an agent that
                # is gone for good (not hung) finishes in seconds.
                "agent_disconnect_grace": "10",
            },
            "callback": {"retry_interval": "1", "max_retry_interval": "5"},
            "api": {
                "auth_type": "none",
                "endpoint": self.testbed.masakari_endpoint,
                "timeout": "10",
            },
        }
        for group, values in options.items():
            groups.setdefault(group, {}).update(values)
        lines = []
        for group, values in groups.items():
            lines.append(f"[{group}]")
            lines.extend(f"{k} = {v}" for k, v in values.items())
            lines.append("")
        self.config_path.write_text("\n".join(lines))

    def write_policy(self, text: str) -> None:
        """Replace the policy file atomically (the monitor reads it on SIGHUP)."""
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.policy_path)

    # -- process control ----------------------------------------------------
    def start(self, timeout: float = 30) -> None:
        """Start the process and wait until it has read its journal.

        Only log lines written by this start count: after a restart the
        log already holds the previous run's lines.
        """
        if self.running:
            raise RuntimeError("masakari-iim is already running")
        offset = self.log_size()
        out = open(self.workdir / "masakari-iim.stdout", "ab")
        self.proc = subprocess.Popen(
            [*self.run_command, "--config-file", str(self.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.wait_log("journal:", timeout=timeout, after=offset)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, as an init system would; returns the exit code.

        :attr:`last_stop_seconds` says how long the process took to exit.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            started = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
            finally:
                self.last_stop_seconds = time.monotonic() - started
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

    def log_size(self) -> int:
        """Offset to pass as ``after`` to look only at lines written from now on."""
        return len(self.log())

    def wait_log(self, text: str, timeout: float, after: int = 0) -> None:
        """Until ``text`` appears in the log past offset ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"masakari-iim exited with {self.proc.returncode}; log: {self.log_path}"
                )
            time.sleep(0.2)
        raise TimeoutError(f"{text!r} not in {self.log_path} after {timeout}s")

    def status(self, *args: str) -> str:
        """``masakari-iim status [ARGS]`` output, as an operator would read it."""
        out = subprocess.run(
            [self.binary, "status", *args, "--config-file", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"masakari-iim status exited with {out.returncode}: {out.stderr.strip()}"
            )
        return out.stdout

    def status_report(self) -> Status:
        """``status --json``, parsed into journal rows and outbox rows."""
        return parse_status(self.status("--json"))
