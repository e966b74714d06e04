"""A real masakari-api and masakari-engine, configured for a one-machine testbed.

Masakari runs unmodified from its own virtualenv (see install.py) with:

* ``auth_strategy = noauth2``: no Keystone for the API; every caller is admin.
* SQLite for its database and its taskflow persistence.
* a private RabbitMQ (rabbitmq.py) between API and engine.
* the Nova stand-in (nova_standin.py) as its Keystone and Nova.
* ``notification_delay_max = 0``: by default the API sleeps a random 0-5 s
  before storing each notification, which only slows tests down.
* ``[instance_failure] process_all_instances = true`` so a VM notification
  for any testbed guest is acted on (the stand-in also reports every server
  as ``HA_Enabled``); short engine wait periods so a failed recovery fails
  within seconds instead of minutes.

The API process can be stopped and started on its own (same port, same
database) to test how a monitor copes with an unreachable Masakari.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .procs import Daemon, TestbedError, run, wait_for

SEGMENT_NAME = "iim-testbed-segment"

#: masakari's RPC topic ([DEFAULT] masakari_topic); the engine consumes a
#: queue of that name.
ENGINE_TOPIC = "ha_engine"

#: Run with masakari's python: exits 0 once queue argv[2] has a consumer.
_ENGINE_QUEUE_PROBE = """
import sys, time
import kombu
url, queue, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
url = url.replace("rabbit://", "amqp://", 1)  # oslo.messaging's scheme -> kombu's
deadline = time.monotonic() + timeout
last = None
while time.monotonic() < deadline:
    try:
        with kombu.Connection(url, connect_timeout=2) as conn:
            consumers = conn.channel().queue_declare(queue=queue, passive=True).consumer_count
            if consumers > 0:
                sys.exit(0)
            last = "no consumer yet"
    except Exception as exc:  # queue not declared yet: the broker answers 404
        last = exc
    time.sleep(0.2)
print(last)
sys.exit(1)
"""


def _config(*, root: Path, api_port: int, nova_port: int, transport_url: str) -> str:
    return f"""\
[DEFAULT]
auth_strategy = noauth2
masakari_api_listen = 127.0.0.1
masakari_api_listen_port = {api_port}
masakari_api_workers = 1
transport_url = {transport_url}
notification_delay_max = 0
log_dir = {root / "log"}
use_stderr = false
debug = false
# Engine: the default waits are minutes long, far too long for tests.
verify_interval = 1
wait_period_after_power_off = 30
wait_period_after_power_on = 30
# Nova client, used by the API to check host names and by the engine to
# stop/start servers: both go to the Nova stand-in.
os_privileged_user_name = masakari
os_privileged_user_password = stand-in
os_privileged_user_tenant = service
os_privileged_user_auth_url = http://127.0.0.1:{nova_port}/v3

[wsgi]
api_paste_config = {root / "api-paste.ini"}

[database]
connection = sqlite:///{root / "masakari.db"}

[taskflow]
connection = sqlite:///{root / "taskflow.db"}

[instance_failure]
process_all_instances = true

[oslo_messaging_notifications]
driver = noop

[oslo_concurrency]
lock_path = {root / "locks"}

[keystone_authtoken]
# Read only by masakari's Nova client (the noauth2 pipeline has no authtoken).
auth_type = password
"""


class Masakari:
    """masakari-api and masakari-engine under ``root``, from ``venv``."""

    def __init__(self, root: Path, venv: Path) -> None:
        self.root = root
        self.venv = venv
        self.config = root / "masakari.conf"

    def endpoint(self, api_port: int) -> str:
        return f"http://127.0.0.1:{api_port}/v1"

    def prepare(self, *, api_port: int, nova_port: int, transport_url: str) -> None:
        """Write a fresh config and an empty, migrated database."""
        for sub in ("log", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for old in ("masakari.db", "taskflow.db"):
            (self.root / old).unlink(missing_ok=True)
        shutil.copy(self.venv / "etc/masakari/api-paste.ini", self.root / "api-paste.ini")
        self.config.write_text(
            _config(
                root=self.root, api_port=api_port, nova_port=nova_port, transport_url=transport_url
            )
        )
        run(
            [
                str(self.venv / "bin/masakari-manage"),
                "--config-file",
                str(self.config),
                "db",
                "sync",
            ],
            timeout=120,
        )

    def start_api(self) -> Daemon:
        return Daemon.spawn(
            "masakari-api",
            [str(self.venv / "bin/masakari-api"), "--config-file", str(self.config)],
            self.root / "log" / "masakari-api.stdout",
            marker=str(self.config),
        )

    def start_engine(self) -> Daemon:
        return Daemon.spawn(
            "masakari-engine",
            [str(self.venv / "bin/masakari-engine"), "--config-file", str(self.config)],
            self.root / "log" / "masakari-engine.stdout",
            marker=str(self.config),
        )

    def wait_api(self, api_port: int, daemon: Daemon, timeout: float = 60.0) -> None:
        def answers() -> bool:
            try:
                self.request(api_port, "GET", "/segments")
                return True
            except (OSError, TestbedError):
                return False

        wait_for(
            f"masakari-api on port {api_port} (log in {self.root / 'log'})",
            answers,
            timeout,
            interval=0.1,
            alive=daemon.alive,
        )

    def wait_engine(self, transport_url: str, daemon: Daemon, timeout: float = 60.0) -> None:
        """Wait until masakari-engine consumes its RPC queue.

        A notification cast before that is dropped by RabbitMQ (masakari's
        periodic retry would pick it up only minutes later), so "the engine
        process runs" is not enough. The check asks the broker itself, with
        kombu from masakari's venv, how many consumers the queue has.
        """
        if not daemon.alive():
            raise TestbedError(f"masakari-engine exited (log in {self.root / 'log'})")
        proc = run(
            [
                str(self.venv / "bin/python"),
                "-c",
                _ENGINE_QUEUE_PROBE,
                transport_url,
                ENGINE_TOPIC,
                str(timeout),
            ],
            timeout=timeout + 30,
            check=False,
        )
        if proc.returncode != 0:
            raise TestbedError(
                f"masakari-engine does not consume queue {ENGINE_TOPIC}: "
                f"{proc.stdout.strip()} (log in {self.root / 'log'})"
            )

    # -- REST -------------------------------------------------------------

    def request(
        self,
        api_port: int,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> Any:
        """One JSON request to the API; raises TestbedError on an HTTP error."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.endpoint(api_port) + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise TestbedError(
                f"{method} {path} -> {err.code}: {err.read().decode(errors='replace')}"
            ) from err
        return json.loads(raw) if raw else None

    def seed(self, api_port: int, hostname: str) -> tuple[str, str]:
        """Create the segment and the host; return (segment uuid, host uuid)."""
        segment = self.request(
            api_port,
            "POST",
            "/segments",
            {
                "segment": {
                    "name": SEGMENT_NAME,
                    "recovery_method": "auto",
                    "service_type": "COMPUTE",
                }
            },
        )["segment"]
        host = self.request(
            api_port,
            "POST",
            f"/segments/{segment['uuid']}/hosts",
            {
                "host": {
                    "name": hostname,
                    "type": "COMPUTE",
                    "control_attributes": "SSH",
                }
            },
        )["host"]
        return segment["uuid"], host["uuid"]
