"""A one-machine testbed for the introspective instance monitor.

It runs, all on loopback and all under one work directory:

* a private libvirtd with tiny QEMU (TCG) guests that run qemu-ga and a demo
  application whose health the tests control (see README.md, "Guest contract");
* a real masakari-api and masakari-engine (noauth2, SQLite) with a private
  RabbitMQ between them, seeded with one segment and one host;
* the STAND-IN FOR NOVA (nova_standin.py), the one test double: Keystone and
  Nova as masakari sees them, mapping server stop/start to libvirt domains.

Usage::

    tb = Testbed(workdir)
    tb.setup()      # install / build what is missing (idempotent)
    tb.start()
    uuid = tb.create_guest("vm1")
    tb.wait_agent("vm1")
    ...
    tb.stop()

The running state (pids, ports) is kept in ``workdir/state.json`` so that a
second process, e.g. ``python -m testbed down``, can stop what ``up`` started.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import install
from .guest_image import GuestImage, ensure_guest_image
from .guests import ExecResult, GuestAgentError, Guests
from .libvirtd import Libvirtd
from .masakari import Masakari
from .procs import Daemon, TestbedError, free_port, tcp_open, wait_for
from .rabbitmq import RabbitMQ

__all__ = ["Testbed", "TestbedError", "GuestAgentError", "ExecResult"]

APP_STATES = ("healthy", "hung", "exited")
NOVA_STANDIN = Path(__file__).with_name("nova_standin.py")


class Testbed:
    """Start, control and stop the whole testbed (see module docstring)."""

    __test__ = False  # not a test class, whatever pytest's name matching thinks

    def __init__(self, workdir: Path, hostname: str = "iim-testbed-host") -> None:
        self.workdir = Path(workdir).resolve()
        self.hostname = hostname
        self.cache = install.cache_dir()
        self.timings: dict[str, float] = {}
        self._libvirtd = Libvirtd(self.workdir / "libvirt", self.cache / "libvirt-cache")
        self._rabbit = RabbitMQ(self.workdir / "rabbitmq")
        self._masakari = Masakari(self.workdir / "masakari", install.masakari_venv(self.cache))
        self._daemons: dict[str, Daemon] = {}
        self._ports: dict[str, int] = {}
        self._image: GuestImage | None = None
        self.segment_uuid: str | None = None
        self.host_uuid: str | None = None
        self._load_state()

    # -- state file -------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.workdir / "state.json"

    def _save_state(self) -> None:
        state = {
            "hostname": self.hostname,
            "ports": self._ports,
            "daemons": {name: vars(d) for name, d in self._daemons.items()},
            "segment_uuid": self.segment_uuid,
            "host_uuid": self.host_uuid,
            "image": None
            if self._image is None
            else {"kernel": str(self._image.kernel), "initrd": str(self._image.initrd)},
        }
        self._state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _load_state(self) -> None:
        if not self._state_file.exists():
            return
        state = json.loads(self._state_file.read_text())
        self.hostname = state["hostname"]
        self._ports = state["ports"]
        self._daemons = {name: Daemon(**d) for name, d in state["daemons"].items()}
        self._libvirtd.daemon = self._daemons.get("libvirtd")
        self.segment_uuid = state.get("segment_uuid")
        self.host_uuid = state.get("host_uuid")
        if state.get("image"):
            self._image = GuestImage(Path(state["image"]["kernel"]), Path(state["image"]["initrd"]))

    # -- setup / start / stop ---------------------------------------------

    def setup(self) -> None:
        """Install packages, kernel and masakari; build the guest image.

        Idempotent: a second call only checks what is there.
        """
        started = time.monotonic()
        install.setup(self.cache)
        self._image = ensure_guest_image(self.cache, self.cache / "kernel")
        self.timings["setup"] = time.monotonic() - started

    def start(self) -> None:
        """Start every service; on any failure tear down what started and raise."""
        if any(d.ours() for d in self._daemons.values()):
            raise TestbedError(f"testbed in {self.workdir} is already running")
        if not (self.cache / "kernel" / "vmlinuz").exists() or not self._masakari.venv.exists():
            raise TestbedError("testbed not installed: run setup() first")
        started = time.monotonic()
        self._clean_workdir()
        self._image = ensure_guest_image(self.cache, self.cache / "kernel")
        self._daemons = {}
        try:
            self._start_services()
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started

    def _clean_workdir(self) -> None:
        """Start from nothing: no domain definitions, queues or notifications
        left by an earlier run in this directory (e.g. one that crashed)."""
        self._libvirtd.kill_leftover_qemu(str(self.workdir))
        for sub in ("libvirt", "rabbitmq", "masakari", "guests"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        (self.workdir / "nova-standin.log").unlink(missing_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _start_services(self) -> None:
        # Launch the slow starters first (libvirtd probes QEMU, RabbitMQ boots
        # an Erlang VM) and prepare masakari's database while they come up.
        self._libvirtd.start()
        assert self._libvirtd.daemon is not None
        self._daemons["libvirtd"] = self._libvirtd.daemon
        rabbit_ports, (epmd, rabbit) = self._rabbit.start()
        self._daemons["epmd"] = epmd
        self._daemons["rabbitmq"] = rabbit
        self._ports = {"amqp": rabbit_ports.amqp, "nova": free_port(), "api": free_port()}
        self._save_state()  # from here on, `down` from another process works

        self._daemons["nova-standin"] = Daemon.spawn(
            "nova-standin",
            [
                sys.executable,
                str(NOVA_STANDIN),
                "--port",
                str(self._ports["nova"]),
                "--libvirt-uri",
                self._libvirtd.uri,
                "--hostname",
                self.hostname,
            ],
            self.workdir / "nova-standin.log",
            marker=f"--port {self._ports['nova']}",
        )
        self._masakari.prepare(
            api_port=self._ports["api"],
            nova_port=self._ports["nova"],
            transport_url=self._rabbit.transport_url(rabbit_ports),
        )
        self._daemons["masakari-api"] = self._masakari.start_api()
        self._daemons["masakari-engine"] = self._masakari.start_engine()
        self._save_state()

        nova = self._daemons["nova-standin"]
        wait_for("Nova stand-in", lambda: tcp_open(self._ports["nova"]), 30, alive=nova.alive)
        self._libvirtd.wait_ready()
        self._rabbit.wait_ready(rabbit_ports, rabbit)
        self._masakari.wait_api(self._ports["api"], self._daemons["masakari-api"])
        self._masakari.wait_engine(
            self._rabbit.transport_url(rabbit_ports), self._daemons["masakari-engine"]
        )
        self.segment_uuid, self.host_uuid = self._masakari.seed(self._ports["api"], self.hostname)
        self._save_state()

    def stop(self) -> None:
        """Tear everything down: guests, daemons, leftover QEMU processes.

        Safe to call more than once and from another process (state file).
        Raises TestbedError if a process survived, so that a leak fails the
        run that caused it instead of confusing the next one.
        """
        libvirtd = self._daemons.get("libvirtd")
        if libvirtd is not None and libvirtd.ours() and self._libvirtd.socket.exists():
            self._guests().remove_all()
        # Engine before API and stand-in (it may be mid-recovery calling
        # them); libvirtd last so guests are already gone.
        daemons = dict(self._daemons)
        for name in ("masakari-engine", "masakari-api", "nova-standin", "rabbitmq", "epmd"):
            if name in daemons:
                daemons[name].stop()
        self._libvirtd.stop()
        killed = self._libvirtd.kill_leftover_qemu(str(self.workdir))
        survivors = [f"{name} (pid {d.pid})" for name, d in daemons.items() if d.ours()]
        survivors += [f"qemu (pid {pid}) needed SIGKILL" for pid in killed]
        self._daemons = {}
        self._state_file.unlink(missing_ok=True)
        if survivors:
            raise TestbedError(f"processes left after stop: {', '.join(survivors)}")

    # -- endpoints ----------------------------------------------------------

    @property
    def libvirt_uri(self) -> str:
        return self._libvirtd.uri

    @property
    def masakari_endpoint(self) -> str:
        return self._masakari.endpoint(self._ports["api"])

    @property
    def nova_endpoint(self) -> str:
        """Keystone URL of the Nova stand-in (for diagnostics)."""
        return f"http://127.0.0.1:{self._ports['nova']}/v3"

    # -- guests -------------------------------------------------------------

    def _guests(self) -> Guests:
        return Guests(
            self.libvirt_uri, self.workdir, self._image, self._libvirtd.root / "run" / "qemu"
        )

    def create_guest(
        self,
        name: str,
        agent: bool = True,
        blocked_rpcs: list[str] | tuple[str, ...] = (),
        nova_metadata: dict[str, str] | None = None,
        disk: bool = False,
    ) -> str:
        """Define and boot a guest; return its UUID (does not wait for the agent).
        ``disk``: with an ext4 data disk mounted at /data in the guest."""
        return self._guests().create(
            name, agent=agent, blocked_rpcs=blocked_rpcs, nova_metadata=nova_metadata,
            disk=disk,
        )

    def wait_agent(self, name: str, timeout: float = 60) -> None:
        self._guests().wait_agent(name, timeout)

    def guest_exec(self, name: str, argv: list[str], timeout: float = 10) -> tuple[int, str, str]:
        """Run a command in the guest via qemu-ga; return (exitcode, stdout, stderr)."""
        result = self._guests().exec(name, argv, timeout)
        return result.exitcode, result.stdout, result.stderr

    def freeze_agent(self, name: str) -> None:
        self._guests().freeze_agent(name)

    def agent_command(
        self, name: str, command: str, arguments: dict[str, Any] | None = None, timeout: int = 5
    ) -> Any:
        """One qemu-ga command (e.g. guest-fsfreeze-freeze); its ``return``
        value. Raises GuestAgentError when the agent refuses or fails."""
        return self._guests().agent(name, command, arguments, timeout=timeout)

    def set_app_state(self, name: str, state: str) -> None:
        """Put the demo application in ``healthy``, ``hung`` or ``exited``.

        ``healthy`` also resumes heartbeats stopped by :meth:`stop_heartbeat`.
        """
        if state not in APP_STATES:
            raise ValueError(f"state must be one of {APP_STATES}, not {state!r}")
        self._app_ctl(name, state)

    def stop_heartbeat(self, name: str) -> None:
        """The app keeps running and stays healthy but stops refreshing its heartbeat."""
        self._app_ctl(name, "stop-heartbeat")

    def app_state(self, name: str) -> str:
        """healthy | hung | exited | no-heartbeat, as the guest sees it."""
        return self._app_ctl(name, "status").strip()

    def _app_ctl(self, name: str, command: str) -> str:
        exitcode, out, err = self.guest_exec(name, ["/usr/bin/app-ctl", command])
        if exitcode != 0:
            raise TestbedError(f"app-ctl {command} in {name} failed ({exitcode}): {err.strip()}")
        return out

    def pause(self, name: str) -> None:
        self._guests().pause(name)

    def resume(self, name: str) -> None:
        self._guests().resume(name)

    def destroy(self, name: str) -> None:
        """Power the guest off (it stays defined; :meth:`start_guest` boots it again)."""
        self._guests().destroy(name)

    def start_guest(self, name: str) -> None:
        self._guests().start(name)

    def domain_state(self, name: str) -> str:
        """virsh domstate with dashes: running, paused, shut-off, crashed, ..."""
        return self._guests().state(name)

    def console_log(self, name: str) -> str:
        """What the guest wrote to its serial console (kernel and /init)."""
        path = self.workdir / "guests" / f"console-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def qemu_pid(self, name: str) -> int | None:
        """Pid of the guest's QEMU process, None when it is not running."""
        return self._guests().qemu_pid(name)

    # -- service control ------------------------------------------------------

    def stop_masakari_api(self) -> None:
        daemon = self._daemons.pop("masakari-api", None)
        if daemon is not None:
            daemon.stop()
        self._save_state()

    def start_masakari_api(self) -> None:
        """Start the API again on the same port with the same database."""
        if "masakari-api" in self._daemons and self._daemons["masakari-api"].ours():
            return
        daemon = self._masakari.start_api()
        self._daemons["masakari-api"] = daemon
        self._save_state()
        self._masakari.wait_api(self._ports["api"], daemon)

    def restart_libvirtd(self) -> None:
        """Restart the daemon; running guests (QEMU processes) survive it."""
        self._libvirtd.restart()
        assert self._libvirtd.daemon is not None
        self._daemons["libvirtd"] = self._libvirtd.daemon
        self._save_state()

    # -- observations -----------------------------------------------------------

    def notifications(self) -> list[dict[str, Any]]:
        """All notifications masakari-api has, newest first."""
        reply = self._masakari.request(self._ports["api"], "GET", "/notifications")
        return list(reply["notifications"])

    def nova_actions(self) -> list[dict[str, Any]]:
        """What the Nova stand-in was asked to do: [{time, action, server, result}]."""
        url = f"http://127.0.0.1:{self._ports['nova']}/_testbed/actions"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return list(json.load(resp)["actions"])

    def status(self) -> dict[str, Any]:
        """Liveness of each daemon plus the endpoints (for the CLI)."""
        return {
            "workdir": str(self.workdir),
            "hostname": self.hostname,
            "daemons": {
                name: {"pid": d.pid, "running": d.ours()} for name, d in self._daemons.items()
            },
            "libvirt_uri": self.libvirt_uri,
            "masakari_endpoint": self.masakari_endpoint if "api" in self._ports else None,
            "segment_uuid": self.segment_uuid,
            "host_uuid": self.host_uuid,
        }
