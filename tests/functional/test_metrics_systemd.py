"""The real ``masakari-iim`` process: its metrics endpoint scraped over
HTTP, the systemd notify protocol read from a datagram socket, and a
first start that logs no warning.

libvirt's test driver stands in for libvirtd. A custom test-driver file
defines a running domain with a guest agent channel, so the monitor
watches it, probes it and journals it (the test driver cannot carry
agent commands, so its verdict is UNKNOWN); "test:///default" has one
domain without an agent.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.test_process import log_text, wait_for, write_conf
from tests.functional.helpers import BIN

AGENT_DOMAIN = "aaaaaaaa-1111-2222-3333-444444444444"

NODE = """<node>
  <domain type='test'>
    <name>vm-agent</name>
    <uuid>%s</uuid>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <channel type='unix'>
        <source mode='bind' path='%s'/>
        <target type='virtio' name='org.qemu.guest_agent.0'/>
      </channel>
    </devices>
  </domain>
</node>
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_domain_conf(tmp_path, extra=""):
    node = tmp_path / "node.xml"
    node.write_text(NODE % (AGENT_DOMAIN, tmp_path / "ga.sock"))
    conf = write_conf(tmp_path, extra)
    conf.write_text(conf.read_text().replace("test:///default", "test://%s" % node))
    return conf


def start(conf, env=None):
    return subprocess.Popen([BIN, "--config-file", str(conf)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_are_scraped_over_http(tmp_path):
    port = free_port()
    conf = agent_domain_conf(tmp_path, "metrics_port = %d\n" % port)
    proc = start(conf)
    try:
        samples = {}

        def probed_twice():
            nonlocal samples
            try:
                samples = scrape(port)
            except OSError:
                return False
            key = ("masakari_iim_verdicts_total", (("verdict", "UNKNOWN"),))
            return samples.get(key, 0) >= 2
        wait_for(probed_twice, 20, "two rounds counted on the metrics endpoint")
        assert samples[("masakari_iim_libvirt_connected", ())] == 1.0
        assert samples[("masakari_iim_journal_readable", ())] == 1.0
        assert samples[("masakari_iim_domains", (("state", "DISCOVERY"),))] == 1.0
        assert samples[("masakari_iim_domains", (("state", "REPORTED"),))] == 0.0
        assert samples[("masakari_iim_verdicts_total", (("verdict", "FAILED"),))] == 0.0
        assert samples[("masakari_iim_notifications", (("status", "pending"),))] == 0.0
        assert samples[("masakari_iim_outbox_pending", ())] == 0.0
        assert samples[("masakari_iim_outbox_oldest_pending_age_seconds", ())] == 0.0
        assert "metrics endpoint on http://127.0.0.1:%d/metrics" % port in log_text(tmp_path)
    finally:
        assert finish(proc) == 0
    with pytest.raises(OSError):
        scrape(port)                      # closed with the monitor


def test_a_taken_metrics_port_leaves_the_monitor_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(agent_domain_conf(tmp_path, "metrics_port = %d\n" % port))
        try:
            wait_for(lambda: "domain vm-agent (%s): UNKNOWN" % AGENT_DOMAIN
                     in log_text(tmp_path), 20, "the domain to be probed")
            assert proc.poll() is None
        finally:
            assert finish(proc) == 0
    errors = [line for line in log_text(tmp_path).splitlines()
              if re.match(r"\S+ \S+ \d+ ERROR ", line)]
    assert len(errors) == 1, errors
    assert "metrics endpoint off: cannot listen on 127.0.0.1:%d: " % port in errors[0]
    assert errors[0].count("Address already in use") == 1, errors[0]


@pytest.fixture(params=["abstract", "path"])
def notify_socket(request, tmp_path_factory):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "abstract":
        name = "iim-functional-%d-%d" % (os.getpid(), time.monotonic_ns())
        sock.bind("\0" + name)
        value = "@" + name
    else:
        # AF_UNIX paths are short (108 bytes): pytest's tmp_path may be too long.
        value = os.path.join(str(tmp_path_factory.mktemp("sd", numbered=True)), "n")
        if len(value) > 100:
            pytest.fail("temporary path too long for an AF_UNIX socket: %s" % value)
        sock.bind(value)
    sock.settimeout(0.2)
    yield sock, value
    sock.close()


def read_until(sock, done, timeout):
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(messages):
        try:
            messages.append((time.monotonic(), sock.recv(4096).decode()))
        except socket.timeout:
            pass
    return messages


def test_systemd_notify_protocol(tmp_path, notify_socket):
    sock, address = notify_socket
    env = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="4000000")
    proc = start(write_conf(tmp_path), env)
    try:
        messages = read_until(
            sock, lambda ms: sum("WATCHDOG=1" in m for _, m in ms) >= 3, 20)
        texts = [m for _, m in messages]
        ready = [m for m in texts if "READY=1" in m]
        assert len(ready) == 1, texts
        assert re.search(r"STATUS=domains watched: \d+; libvirt connected", ready[0])
        # ready comes after the journal is open and libvirt was tried
        assert "connected to libvirt" in log_text(tmp_path)
        assert texts.index(ready[0]) < texts.index("WATCHDOG=1")
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        assert len(pings) >= 3
        # every half WATCHDOG_USEC (2 s), up to one idle loop turn (1 s) late
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(1.8 <= g <= 3.2 for g in gaps), gaps
        proc.send_signal(signal.SIGTERM)
        tail = read_until(sock, lambda ms: any("STOPPING=1" in m for _, m in ms), 10)
        assert any(m.startswith("STOPPING=1") for _, m in tail), tail
    finally:
        assert finish(proc) == 0


def test_without_notify_socket_nothing_changes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc = start(write_conf(tmp_path), env)
    try:
        wait_for(lambda: "has no guest agent channel" in log_text(tmp_path), 20, "start-up")
    finally:
        assert finish(proc) == 0
    assert "systemd" not in log_text(tmp_path)


def test_first_start_logs_no_warning(tmp_path):
    """A fresh journal, a libvirt that is there: the log of a clean start
    holds no WARNING (none about listing domains before libvirt was
    tried, in particular)."""
    proc = start(write_conf(tmp_path))
    try:
        wait_for(lambda: "has no guest agent channel" in log_text(tmp_path), 20, "start-up")
        time.sleep(1.5)                   # an inventory or two more
    finally:
        assert finish(proc) == 0
    text = log_text(tmp_path)
    assert "cannot list domains" not in text
    assert [line for line in text.splitlines()
            if re.match(r"\S+ \S+ \d+ WARNING ", line)] == []
