"""libvirt errors as real libvirt returned them, for table-driven tests.

``tests/data/recorded-libvirt-replies.json`` is a copy of the testbed recipe's
recording (libvirt 9.0, QEMU TCG guests running qemu-ga 7.2). The
connection-level errors below were recorded the same way against a
private libvirtd 9.0 that was SIGSTOPped (keepalive), SIGTERMed (socket
closed) or absent (connect), and against the ``test:///default`` driver.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Iterator

import libvirt

DATA = pathlib.Path(__file__).parents[2] / "data" / "recorded-libvirt-replies.json"


def load() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def recorded_errors() -> Iterator[tuple[str, int, int, str]]:
    """Every libvirt error in the recording: (case id, code, domain, message)."""
    def walk(node: Any, path: str) -> Iterator[tuple[str, int, int, str]]:
        if isinstance(node, dict):
            if "code" in node and "msg" in node:
                yield path, node["code"], node["domain"], node["msg"]
                return
            for key, value in node.items():
                yield from walk(value, "%s.%s" % (path, key) if path else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, "%s[%d]" % (path, i))

    yield from walk(load()["failures"], "")


# (code, domain, message), recorded on this testbed as described above.
KEEPALIVE_TIMEOUT = (1, 7, "internal error: connection closed due to keepalive timeout")
SOCKET_CLOSED = (1, 7, "internal error: client socket is closed")
CONNECT_FAILED = (38, 7, "Failed to connect socket to '/tmp/hvlab/sock/libvirt-sock': "
                         "No such file or directory")
CLOSED_CONN_POINTER = (6, 20, "invalid connection pointer in virConnectListAllDomains")
TEST_DRIVER_AGENT = (3, 0, "this function is not supported by the connection driver: "
                           "virDomainQemuAgentCommand")
TEST_DRIVER_RESPONSE_TIMEOUT = (3, 20, "this function is not supported by the connection "
                                       "driver: virDomainAgentSetResponseTimeout")
TEST_DRIVER_NO_DOMAIN = (42, 12, "Domain not found")
INVALID_UUID = (8, 20, "Invalid UUID")
# Counters of a device the domain does not have (hot-unplugged since the
# XML was read), from the test driver; libvirt 9.0's QEMU driver reports
# both with the same code and wording.
TEST_DRIVER_NO_DISK = (8, 12, "invalid argument: invalid path: vdz")
TEST_DRIVER_NO_INTERFACE = (8, 20, "invalid argument: 'vnet9' is not a known interface")
TEST_DRIVER_NOT_RUNNING = (55, 20, "Requested operation is not valid: domain is not running")


def libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    """A libvirtError carrying exactly this (code, domain, message)."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return exc
