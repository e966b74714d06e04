"""Byte-level misbehaviour of whatever answers at [api] endpoint, against
a real socket server on 127.0.0.1 that writes exactly the bytes a test
asks for: every request ends within its deadline, and what is read of an
answer is capped."""
from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc

import pytest
from oslo_config import cfg
from keystoneauth1 import loading as ks_loading

from masakarimonitors_iim.notifier import bounded
from masakarimonitors_iim.notifier import masakari as masakari_mod
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.notifier.masakari import MasakariNotifier

MU = "0f7e6c58-0000-4000-8000-000000000001"


def accepted(body: bytes) -> bytes:
    n = json.loads(body)["notification"]
    data = json.dumps({"notification": dict(
        n, notification_uuid=MU, status="new", id=1)}).encode()
    return (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(data)) + data


class RawServer:
    """Reads one request per connection, then plays ``self.mode``."""

    def __init__(self) -> None:
        self.mode = "accept"
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sent_bytes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            body += conn.recv(65536)
        return body

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self.stop.is_set():
                return
            conn.sendall(data[i:i + 1])
            time.sleep(0.2)

    def _one(self, conn: socket.socket) -> None:
        try:
            body = self._read_request(conn)
            mode = self.mode
            if mode == "accept":
                conn.sendall(accepted(body))
            elif mode == "trickle-headers":
                self._trickle(conn, b"HTTP/1.1 202 Accepted\r\n" + b"X-Slow: " +
                              b"a" * 10000 + b"\r\n\r\n")
            elif mode == "trickle-body":
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 10000\r\n\r\n")
                self._trickle(conn, b" " * 10000)
            elif mode == "huge-body":
                size = 20 * 1024 * 1024
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-"
                             b"Type: text/html\r\nContent-Length: %d\r\n\r\n" % size)
                chunk = b"<p>error</p>" * 8192
                while self.sent_bytes < size and not self.stop.is_set():
                    conn.sendall(chunk)
                    self.sent_bytes += len(chunk)
            elif mode == "endless-chunked":
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-"
                             b"Type: application/json\r\nTransfer-Encoding: "
                             b"chunked\r\n\r\n")
                while not self.stop.is_set():
                    conn.sendall(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
                    self.sent_bytes += 0x4000
            elif mode == "html-200":
                page = b"<html><body>Welcome to nginx!</body></html>"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(page), page))
        except OSError:
            pass        # the client hung up: exactly what these tests want
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def server():
    s = RawServer()
    yield s
    s.close()


def notifier(tmp_path, port, timeout=2):
    conf = cfg.ConfigOpts()
    ks_loading.register_session_conf_options(conf, "api")
    ks_loading.register_auth_conf_options(conf, "api")
    conf.register_opts([cfg.StrOpt("region", default="RegionOne"),
                        cfg.StrOpt("api_interface", default="public")],
                       group="api")
    path = tmp_path / "masakarimonitors.conf"
    path.write_text("[api]\nauth_type = none\nendpoint = http://127.0.0.1:%d/v1\n"
                    "timeout = %s\n" % (port, timeout))
    conf(args=["--config-file", str(path)], project="masakarimonitors",
         default_config_files=[])
    return MasakariNotifier(conf)


def send(n):
    return n.send(make_notification("6f1b2d3c-1111-4a5b-9c8d-0123456789ab",
                                    "host1", 1700000000.0))


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body"])
def test_a_trickling_server_is_cut_at_the_total_deadline(server, tmp_path, mode):
    """One byte every 0.2 s never trips a 2 s per-read timeout; the total
    deadline of [api] timeout = 2 still ends the request."""
    n = notifier(tmp_path, server.port, timeout=2)
    server.mode = mode
    started = time.monotonic()
    outcome = send(n)
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 2.6, elapsed
    assert outcome.status is DeliveryStatus.RETRY
    assert "no complete answer within 2s" in outcome.detail
    assert "may have reached Masakari" in outcome.detail
    # the cut connection is not reused: the next request works
    server.mode = "accept"
    outcome = send(n)
    assert (outcome.status, outcome.masakari_uuid) == (DeliveryStatus.DELIVERED, MU)


@pytest.mark.parametrize("mode", ["huge-body", "endless-chunked"])
def test_a_huge_answer_costs_a_bounded_read(server, tmp_path, mode):
    n = notifier(tmp_path, server.port, timeout=10)
    send(n)                             # warm up: session, imports
    server.mode = mode
    tracemalloc.start()
    try:
        started = time.monotonic()
        outcome = send(n)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status is DeliveryStatus.RETRY
    assert "HTTP 500" in outcome.detail and "(cut)" in outcome.detail
    assert len(outcome.detail) <= 500
    assert peak < 2 * masakari_mod.MAX_BODY + 1024 * 1024, peak
    assert elapsed < 5                  # the cap ends it, not the deadline


def test_an_html_200_is_not_a_delivery(server, tmp_path):
    server.mode = "html-200"
    outcome = send(notifier(tmp_path, server.port))
    assert outcome.status is DeliveryStatus.MISCONFIGURED
    assert outcome.masakari_uuid == ""
    assert "HTTP 200 (text/html) without a notification" in outcome.detail
    assert "[api] endpoint" in outcome.detail


def test_a_server_that_accepts_and_says_nothing_cannot_hold_the_probe(
        server, tmp_path, monkeypatch):
    monkeypatch.setattr(masakari_mod, "PROBE_TIMEOUT", 1.0)
    server.mode = "trickle-headers"
    n = notifier(tmp_path, server.port, timeout=30)
    started = time.monotonic()
    assert n.reachable() is False
    assert time.monotonic() - started < masakari_mod.PROBE_TIMEOUT + 0.6


def test_deadline_blocks_nest_and_leave_no_watch_behind():
    assert bounded.current() is None
    with bounded.deadline(5) as outer:
        with bounded.deadline(1) as inner:
            assert bounded.current() is inner
            assert 0 < inner.remaining() <= 1
        assert bounded.current() is outer
    assert bounded.current() is None
    assert not outer.expired
