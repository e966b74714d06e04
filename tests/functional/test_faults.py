"""The real ``masakari-iim`` process under faults that need no guest:
a second monitor on the same journal, hostile policy files at start-up
and on SIGHUP, and SIGTERM while Masakari trickles its answer.

Against libvirt's test driver (test:///default), as test_process.py.
The rows of doc/source/faults.rst that need real guests or a real
libvirtd are in tests/e2e/test_faults_e2e.py.
"""
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox.store import OutboxStore
from tests.unit.policy.test_policy_hostile import LAUGHS
from tests.functional.helpers import BIN, wait_for, log_text


def write_conf(tmp_path, extra="", notifier="log", sections=""):
    path = tmp_path / "masakarimonitors.conf"
    path.write_text(
        "[DEFAULT]\nhostname = functional-host\nlog_file = %s\ndebug = true\n"
        "[libvirt]\nconnection_uri = test:///default\n"
        "[introspectiveinstancemonitor]\njournal_path = %s\nnotifier = %s\n"
        "guest_monitoring_interval = 1\n%s%s"
        % (tmp_path / "iim.log", journal(tmp_path), notifier, extra, sections))
    return path


def journal(tmp_path):
    return tmp_path / "state" / "journal.sqlite"


def start(conf):
    return subprocess.Popen([BIN, "--config-file", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def sigterm_seconds(proc):
    """SIGTERM; the seconds until the process exited, and its exit code."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError("SIGTERM did not stop the monitor within 15 s")
    return time.monotonic() - started, code


@pytest.fixture
def procs():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


# -- one monitor per journal ----------------------------------------------------

def test_a_second_monitor_on_the_same_journal_is_refused(tmp_path, procs):
    conf = write_conf(tmp_path)
    first = start(conf)
    procs.append(first)
    wait_for(lambda: "has no guest agent channel" in log_text(tmp_path), 20, "start-up")

    second = subprocess.run([BIN, "--config-file", str(conf)], capture_output=True,
                            text=True, timeout=30)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert str(journal(tmp_path)) in lines[0]
    assert "pid %d" % first.pid in lines[0] and "ps -o pid,args -p %d" % first.pid in lines[0]

    # Read-only status keeps working beside the running monitor.
    status = subprocess.run([BIN, "status", "--config-file", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert first.poll() is None

    seconds, code = sigterm_seconds(first)
    assert code == 0 and seconds < 5.0
    # Released on stop: the next one starts.
    third = start(conf)
    procs.append(third)
    offset = len(log_text(tmp_path))
    wait_for(lambda: "journal:" in log_text(tmp_path)[offset:], 20, "the third to start")
    assert third.poll() is None


# -- bad policy files -----------------------------------------------------------

HOSTILE = {
    "nested aliases": (LAUGHS, "expands to more than"),
    "deep nesting": ("version: 1\nrules: " + "[" * 50_000 + "]" * 50_000 + "\n",
                     "nested deeper than"),
    "a set": ("version: 1\nrules: !!set {a, b}\n", "!!set"),
    "a huge integer": ("version: 1\nrules:\n  - name: a\n    failure_threshold: " + "9" * 5000
                       + "\n", "longer than 32"),
    "an impossible date": ("version: 1\nrules:\n  - name: a\n    match: {domain_name: "
                           "2024-13-01}\n", "not a valid date"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_policy_file_stops_the_start_with_one_line(tmp_path, name):
    text, words = HOSTILE[name]
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    conf = write_conf(tmp_path, "policy_file = %s\n" % policy)
    out = subprocess.run([BIN, "--config-file", str(conf)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr[-2000:]
    assert len(lines[0]) < 1000


def test_a_hostile_policy_file_on_sighup_is_refused_and_the_monitor_runs_on(tmp_path, procs):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: patient\n    failure_threshold: 7\n")
    conf = write_conf(tmp_path, "policy_file = %s\n" % policy)
    proc = start(conf)
    procs.append(proc)
    wait_for(lambda: "has no guest agent channel" in log_text(tmp_path), 20, "start-up")

    for name in sorted(HOSTILE):
        text, words = HOSTILE[name]
        offset = len(log_text(tmp_path))
        policy.write_text(text)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "previous policy stays in force" in log_text(tmp_path)[offset:], 30,
                 "the reload of %s to be refused" % name)
        (line,) = [line for line in log_text(tmp_path)[offset:].splitlines()
                   if "previous policy stays in force" in line]
        assert words in line and len(line) < 1000, line
        assert "Traceback" not in log_text(tmp_path)[offset:]
        assert proc.poll() is None

    # A good file afterwards is taken, and SIGTERM is as quick as ever.
    offset = len(log_text(tmp_path))
    policy.write_text("version: 1\nrules:\n  - name: patient\n    failure_threshold: 8\n")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "policy reloaded" in log_text(tmp_path)[offset:], 10, "the good reload")
    seconds, code = sigterm_seconds(proc)
    assert code == 0 and seconds < 5.0


# -- SIGTERM while Masakari trickles its answer -----------------------------------

class TricklingServer:
    """Accepts HTTP requests and answers one byte a second, forever: every
    read gets something before any per-read timeout, so only a total
    deadline (or a daemon thread nobody waits for) ends the attempt."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn):
        with conn:
            conn.settimeout(5)
            try:
                head = conn.recv(65536)
                self.requests.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                    if self._stop.wait(1.0):
                        return
                    conn.sendall(bytes([byte]))
                while not self._stop.wait(1.0):     # a header that never ends
                    conn.sendall(b"x")
            except OSError:
                return

    def close(self):
        self._stop.set()
        self.sock.close()


def test_sigterm_within_five_seconds_while_masakari_trickles_bytes(tmp_path, procs):
    server = TricklingServer()
    try:
        # A notification already owed, so the sender's first attempt goes
        # out at once (test:///default has no guest that could fail).
        journal(tmp_path).parent.mkdir(parents=True)
        with Database(str(journal(tmp_path))) as db:
            OutboxStore(db).add(make_notification(str(uuid.uuid4()), "functional-host",
                                                  time.time()), 1, "seeded", time.time())
        conf = write_conf(
            tmp_path, notifier="masakari",
            sections="[api]\nauth_type = none\nendpoint = http://127.0.0.1:%d/v1\n"
                     "timeout = 10\n[callback]\nretry_interval = 1\n" % server.port)
        proc = start(conf)
        procs.append(proc)
        wait_for(lambda: server.requests, 30, "the sender to reach the trickling server")
        time.sleep(2.0)                  # well into the trickle
        assert proc.poll() is None
        seconds, code = sigterm_seconds(proc)
        assert code == 0, log_text(tmp_path)[-3000:]
        assert seconds < 5.0, "stopped after %.1f s; requests: %s" % (seconds, server.requests)
    finally:
        server.close()
