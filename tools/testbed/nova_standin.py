"""STAND-IN FOR NOVA: the testbed's one test double.

Nova cannot run on the testbed machine, but masakari talks to it:
masakari-api checks that a host name is a nova-compute service before it
accepts the host into a segment, and masakari-engine's instance-failure
recovery asks Nova to stop and start the failed server and polls its state.
This small HTTP server answers exactly those calls, as Keystone v3 and the
Nova compute API (microversion 2.53, which masakari pins) would:

  GET  /v3                               identity version document
  POST /v3/auth/tokens                   a token with a catalog pointing here
  GET  /compute/v2.1/os-services         one nova-compute service for ?host=
  PUT  /compute/v2.1/os-services/{id}    enable / disable (recorded)
  GET  /compute/v2.1/servers/{uuid}      state of the libvirt domain with that UUID
  GET  /compute/v2.1/servers/detail      all domains
  POST /compute/v2.1/servers/{uuid}/action
       os-stop   -> virsh destroy  (hard power-off; the busybox guest has no
                                    ACPI handler, Nova would fall back to it)
       os-start  -> virsh start
       lock, unlock, os-resetState -> recorded only

Servers are not invented: each one is a domain of the testbed's private
libvirtd, and stop/start really power the domain off and on, so a masakari
recovery restarts the VM for real. Every server has the metadata
``HA_Enabled=True``, as an operator would set on an instance to protect.

Everything that changes state is recorded and served on
``GET /_testbed/actions`` for the tests. Every log line starts with
"STAND-IN FOR NOVA" so nobody mistakes the log for a real Nova's.

This file uses only the standard library and is run as a script:
    python nova_standin.py --port P --libvirt-uri URI --hostname H
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG = logging.getLogger("nova-standin")
VIRSH_TIMEOUT = 60

#: libvirt domain state (virsh dominfo) -> (vm_state, status, power_state).
_STATES = {
    "running": ("active", "ACTIVE", 1),
    "idle": ("active", "ACTIVE", 1),
    "paused": ("paused", "PAUSED", 3),
    "in shutdown": ("active", "ACTIVE", 1),
    "shut off": ("stopped", "SHUTOFF", 4),
    "crashed": ("stopped", "SHUTOFF", 4),
    "pmsuspended": ("suspended", "SUSPENDED", 7),
}


class NovaError(Exception):
    """An HTTP error reply in Nova's JSON shape."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class Compute:
    """The state the stand-in keeps and the libvirt calls it makes."""

    def __init__(self, libvirt_uri: str, hostname: str) -> None:
        self.libvirt_uri = libvirt_uri
        self.hostname = hostname
        self.service_status = "enabled"
        self.disabled_reason: str | None = None
        self._locked: set[str] = set()
        self._actions: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -- libvirt ----------------------------------------------------------

    def _virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["virsh", "-q", "-c", self.libvirt_uri, *args],
            capture_output=True,
            text=True,
            timeout=VIRSH_TIMEOUT,
            check=False,
        )

    def _dominfo(self, server_id: str) -> dict[str, str]:
        proc = self._virsh("dominfo", server_id)
        if proc.returncode != 0:
            raise NovaError(404, "itemNotFound", f"Instance {server_id} could not be found.")
        info = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
        return info

    # -- API objects ------------------------------------------------------

    def server(self, server_id: str) -> dict[str, Any]:
        info = self._dominfo(server_id)
        vm_state, status, power_state = _STATES.get(info.get("State", ""), ("error", "ERROR", 0))
        uuid = info["UUID"]
        return {
            "id": uuid,
            "name": info["Name"],
            "status": status,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:task_state": None,
            "OS-EXT-STS:power_state": power_state,
            "OS-EXT-SRV-ATTR:host": self.hostname,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": self.hostname,
            "OS-EXT-SRV-ATTR:instance_name": info["Name"],
            "OS-EXT-AZ:availability_zone": "nova",
            "metadata": {"HA_Enabled": "True"},
            "locked": uuid in self._locked,
            "tenant_id": "testbed-project",
            "user_id": "testbed-user",
            "addresses": {},
            "links": [],
        }

    def servers(self) -> list[dict[str, Any]]:
        proc = self._virsh("list", "--all", "--uuid")
        result = []
        for uuid in proc.stdout.split():
            with contextlib.suppress(NovaError):  # undefined between list and dominfo
                result.append(self.server(uuid))
        return result

    def service(self) -> dict[str, Any]:
        return {
            "id": 1,
            "binary": "nova-compute",
            "host": self.hostname,
            "zone": "nova",
            "status": self.service_status,
            "state": "up",
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime()),
            "disabled_reason": self.disabled_reason,
            "forced_down": False,
        }

    # -- actions ----------------------------------------------------------

    def record(self, action: str, target: str, result: str) -> None:
        entry = {"time": time.time(), "action": action, "server": target, "result": result}
        with self._lock:
            self._actions.append(entry)
        LOG.info("STAND-IN FOR NOVA: %s %s -> %s", action, target, result)

    def actions(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._actions)

    def server_action(self, server_id: str, body: dict[str, Any]) -> None:
        if len(body) != 1:
            raise NovaError(400, "badRequest", "exactly one action expected")
        (action,) = body
        server = self.server(server_id)
        uuid, vm_state = server["id"], server["OS-EXT-STS:vm_state"]
        if action == "os-stop":
            if vm_state not in ("active", "paused", "error"):
                self.record("stop", uuid, "409 conflict")
                raise NovaError(
                    409,
                    "conflictingRequest",
                    f"Cannot 'stop' instance {uuid} while it is in vm_state {vm_state}",
                )
            proc = self._virsh("destroy", uuid)
            self.record(
                "stop", uuid, "202" if proc.returncode == 0 else f"500 {proc.stderr.strip()}"
            )
            if proc.returncode != 0:
                raise NovaError(500, "computeFault", proc.stderr.strip())
        elif action == "os-start":
            if vm_state != "stopped":
                self.record("start", uuid, "409 conflict")
                raise NovaError(
                    409,
                    "conflictingRequest",
                    f"Cannot 'start' instance {uuid} while it is in vm_state {vm_state}",
                )
            proc = self._virsh("start", uuid)
            self.record(
                "start", uuid, "202" if proc.returncode == 0 else f"500 {proc.stderr.strip()}"
            )
            if proc.returncode != 0:
                raise NovaError(500, "computeFault", proc.stderr.strip())
        elif action == "lock":
            self._locked.add(uuid)
            self.record("lock", uuid, "202")
        elif action == "unlock":
            self._locked.discard(uuid)
            self.record("unlock", uuid, "202")
        elif action == "os-resetState":
            state = (body[action] or {}).get("state", "error")
            self.record(f"reset-state {state}", uuid, "202")
        else:
            self.record(action, uuid, "400 unsupported by stand-in")
            raise NovaError(
                400, "badRequest", f"action {action} not supported by the Nova stand-in"
            )

    def update_service(self, body: dict[str, Any]) -> None:
        status = body.get("status")
        if status not in ("enabled", "disabled"):
            raise NovaError(400, "badRequest", "status must be enabled or disabled")
        self.service_status = status
        self.disabled_reason = body.get("disabled_reason")
        self.record(f"service {status}", self.hostname, "200")


class Handler(BaseHTTPRequestHandler):
    """HTTP routing; all logic lives in :class:`Compute`."""

    protocol_version = "HTTP/1.1"
    compute: Compute  # set on the subclass made in main()
    base_url: str

    def log_message(self, fmt: str, *args: Any) -> None:
        LOG.info("STAND-IN FOR NOVA: %s", fmt % args)

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise NovaError(400, "badRequest", "JSON object expected")
        return body

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/")
        query = urllib.parse.parse_qs(url.query)
        try:
            body = self._body() if method in ("POST", "PUT") else {}
            self._route(method, path, query, body)
        except NovaError as err:
            self._reply(err.status, {err.kind: {"code": err.status, "message": err.message}})
        except Exception as err:  # a stand-in bug must show up as a 500, not a hang
            LOG.exception("STAND-IN FOR NOVA: internal error")
            self._reply(500, {"computeFault": {"code": 500, "message": str(err)}})

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> None:
        compute = self.compute
        parts = path.split("/")[1:] if path else []
        if method == "GET" and path in ("", "/v3"):
            return self._reply(200, _identity_version(self.base_url))
        if method == "POST" and path == "/v3/auth/tokens":
            return self._reply(201, _token(self.base_url), {"X-Subject-Token": "stand-in-token"})
        if method == "GET" and path == "/_testbed/actions":
            return self._reply(200, {"actions": compute.actions()})
        if parts[:2] != ["compute", "v2.1"]:
            raise NovaError(404, "itemNotFound", f"no such resource {path}")
        rest = parts[2:]
        if method == "GET" and not rest:
            return self._reply(200, {"version": _compute_version(self.base_url)})
        if method == "GET" and rest == ["os-services"]:
            host = query.get("host", [compute.hostname])[0]
            return self._reply(
                200, {"services": [compute.service()] if host == compute.hostname else []}
            )
        if method == "PUT" and len(rest) == 2 and rest[0] == "os-services":
            compute.update_service(body)
            return self._reply(200, {"service": compute.service()})
        if method == "GET" and rest == ["servers", "detail"]:
            return self._reply(200, {"servers": compute.servers()})
        if method == "GET" and len(rest) == 2 and rest[0] == "servers":
            return self._reply(200, {"server": compute.server(rest[1])})
        if method == "POST" and len(rest) == 3 and rest[0] == "servers" and rest[2] == "action":
            compute.server_action(rest[1], body)
            return self._reply(202)
        raise NovaError(
            404, "itemNotFound", f"the Nova stand-in does not implement {method} {path}"
        )

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")


def _identity_version(base: str) -> dict[str, Any]:
    return {
        "version": {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base}/v3/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }
    }


def _compute_version(base: str) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": "2.95",
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}],
    }


def _token(base: str) -> dict[str, Any]:
    domain = {"id": "default", "name": "Default"}
    endpoints = [
        {
            "id": f"compute-{i}",
            "interface": i,
            "region": "RegionOne",
            "region_id": "RegionOne",
            "url": f"{base}/compute/v2.1",
        }
        for i in ("public", "internal", "admin")
    ]
    return {
        "token": {
            "methods": ["password"],
            "issued_at": "2020-01-01T00:00:00.000000Z",
            "expires_at": "2099-01-01T00:00:00.000000Z",
            "user": {"id": "masakari", "name": "masakari", "domain": domain},
            "project": {"id": "service", "name": "service", "domain": domain},
            "roles": [{"id": "admin", "name": "admin"}],
            "catalog": [
                {"type": "compute", "name": "nova", "id": "compute", "endpoints": endpoints}
            ],
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="STAND-IN FOR NOVA (testbed test double)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--libvirt-uri", required=True)
    parser.add_argument("--hostname", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base_url = f"http://127.0.0.1:{args.port}"
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "compute": Compute(args.libvirt_uri, args.hostname),
            "base_url": base_url,
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    LOG.info(
        "STAND-IN FOR NOVA listening on %s (libvirt %s, host %s)",
        base_url,
        args.libvirt_uri,
        args.hostname,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
