"""A private RabbitMQ node on loopback, used only as masakari's RPC bus.

masakari-api hands notifications to masakari-engine over oslo.messaging, so a
real broker is needed. The node runs from Debian's rabbitmq-server package but
with every path, port and name redirected into the testbed's work directory;
the system-wide broker (if any) is never touched. Its Erlang port mapper
(epmd) is started explicitly so that it listens on 127.0.0.1 only and can be
stopped with the node instead of lingering as a daemon.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from .procs import Daemon, free_port, wait_for

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"


@dataclass
class RabbitPorts:
    """The three TCP ports a node needs, all bound to 127.0.0.1."""

    amqp: int
    dist: int
    epmd: int


def amqp_ready(port: int) -> bool:
    """True once the broker answers an AMQP 0-9-1 protocol header.

    The listener opens late in the node's boot, and a reply proves the
    broker, not just a socket, is there.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            sock.settimeout(2.0)
            reply = sock.recv(8)
    except OSError:
        return False
    return len(reply) >= 7 and reply[0] == 1  # frame type 1: method (Connection.Start)


class RabbitMQ:
    """Start/stop one private RabbitMQ node under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def transport_url(self, ports: RabbitPorts) -> str:
        return f"rabbit://guest:guest@127.0.0.1:{ports.amqp}/"

    def _env(self, ports: RabbitPorts) -> dict[str, str]:
        # Only variables listed here reach the node: nothing from the
        # caller's environment can redirect it elsewhere by accident.
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.root / "home"),  # holds the Erlang cookie
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_NODENAME": "iim-testbed@localhost",
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(ports.dist),
            # The distribution listener would bind all interfaces otherwise.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(ports.epmd),
        }

    def start(self) -> tuple[RabbitPorts, list[Daemon]]:
        """Launch epmd and the node; return without waiting for readiness."""
        for sub in ("home", "mnesia", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        ports = RabbitPorts(amqp=free_port(), dist=free_port(), epmd=free_port())
        (self.root / "rabbitmq-env.conf").write_text(
            "# testbed: all settings come from the environment\n"
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{ports.amqp}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        log = self.root / "log"
        epmd = Daemon.spawn(
            "epmd",
            [EPMD, "-address", "127.0.0.1", "-port", str(ports.epmd)],
            log / "epmd.stdout",
            marker=f"-port {ports.epmd}",
        )
        # rabbitmq-server passes extra arguments on to erl; an unused
        # user flag naming our directory marks both the wrapper script and
        # beam.smp as ours. The wrapper stays the group leader and forwards
        # SIGTERM to the node as a clean shutdown.
        marker = f"-iim_testbed_root {self.root}"
        node = Daemon.spawn(
            "rabbitmq",
            [RABBITMQ_SERVER, *marker.split()],
            log / "rabbitmq.stdout",
            marker=marker,
            env=self._env(ports),
        )
        return ports, [epmd, node]

    def wait_ready(self, ports: RabbitPorts, node: Daemon, timeout: float = 60.0) -> None:
        wait_for(
            f"rabbitmq on 127.0.0.1:{ports.amqp} (log in {self.root / 'log'})",
            lambda: amqp_ready(ports.amqp),
            timeout,
            interval=0.2,
            alive=node.alive,
        )
