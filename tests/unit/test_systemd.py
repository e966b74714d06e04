"""systemd notification (sd_notify) against a real datagram socket, the
watchdog vouching only for a scheduler loop that turns, and a quiet
first start (no listing before libvirt's first connection attempt)."""
import configparser
import logging
import os
import socket
import tempfile
import threading
import time

import pytest
from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.db import Database, DatabaseError
from masakarimonitors_iim.hypervisor.types import EventKind, LifecycleEvent
from masakarimonitors_iim.monitor import service
from masakarimonitors_iim.monitor.service import Monitor
from masakarimonitors_iim.monitor.settings import settings_from_conf
from masakarimonitors_iim.monitor.systemd import SystemdNotifier, ping_interval, socket_address
from masakarimonitors_iim.notifier.base import DeliveryOutcome, DeliveryStatus, Notifier
from tests.unit.fakes import FakeHypervisor, InlinePool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
A = "11111111-1111-1111-1111-111111111111"


@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("", None),
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@iim/notify", "\0iim/notify"),            # abstract namespace
    ("vsock:2:1234", None),                     # not AF_UNIX: not ours to speak
    ("relative/path", None),
])
def test_socket_address(value, expected):
    assert socket_address(value) == expected


@pytest.mark.parametrize("env, interval, problem", [
    ({}, None, ""),
    ({"WATCHDOG_USEC": "30000000"}, 15.0, ""),
    ({"WATCHDOG_USEC": "soon"}, None, "WATCHDOG_USEC=soon"),
    ({"WATCHDOG_USEC": "0"}, None, "not positive"),
])
def test_ping_interval(env, interval, problem):
    got, why = ping_interval(env)
    assert got == interval
    assert problem in why and bool(why) == bool(problem)


@pytest.mark.parametrize("env, enabled, interval", [
    ({}, False, None),
    ({"WATCHDOG_USEC": "2000000"}, False, None),                 # no socket: not systemd
    ({"NOTIFY_SOCKET": "/run/n"}, True, None),                   # notify, no watchdog
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "2000000"}, True, 1.0),
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, True, 1.0),
    # systemd watches another process: this one is a forked worker, not the service
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, False, None),
    ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "x"}, True, None),
    ({"NOTIFY_SOCKET": "vsock:2:9"}, False, None),
])
def test_from_environment(env, enabled, interval):
    sd = SystemdNotifier.from_environment(env, pid=7)
    assert (sd.enabled, sd.interval) == (enabled, interval)


class Listener:
    """systemd's side: a datagram socket, path or abstract."""

    def __init__(self, abstract=False):
        self.dir = tempfile.mkdtemp(prefix="iim-sd-", dir="/tmp")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "iim-test-%d-%s" % (os.getpid(), os.path.basename(self.dir))
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            self.env_value = path

    def read(self, timeout=0.0):
        """Every message waiting; if none, the first to come within ``timeout``."""
        out = []
        self.sock.settimeout(max(0.001, timeout))
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return out
            self.sock.setblocking(False)

    def wait_for(self, fragment, timeout):
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.read(0.1):
                seen.append(message)
                if fragment in message:
                    return seen
        raise AssertionError("no %r within %.1fs; got %r" % (fragment, timeout, seen))

    def close(self):
        self.sock.close()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


@pytest.fixture(params=[False, True], ids=["path", "abstract"])
def listener(request):
    sd = Listener(abstract=request.param)
    yield sd
    sd.close()


@pytest.fixture
def sd_socket():
    sd = Listener()
    yield sd
    sd.close()


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_messages_reach_the_socket(listener):
    clock = Clock()
    sd = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "4000000"}, pid=1)
    sd._clock = clock
    assert sd.enabled and sd.interval == 2.0
    sd.ready("0 domains watched")
    assert listener.read(1) == ["READY=1\nSTATUS=0 domains watched"]
    sd.status("0 domains watched")        # unchanged: not sent again
    sd.status("2 domains\nwatched")       # one line, always
    assert listener.read(1) == ["STATUS=2 domains watched"]
    sd.watchdog()
    sd.watchdog()                          # within half the period: once
    clock.t += 1.9
    sd.watchdog()
    assert listener.read(1) == ["WATCHDOG=1"]
    clock.t += 0.2
    sd.watchdog()
    assert listener.read(1) == ["WATCHDOG=1"]
    sd.stopping()
    clock.t += 10
    sd.watchdog()                          # nothing after STOPPING
    assert listener.read(0.3) == ["STOPPING=1\nSTATUS=stopping"]


def test_a_watchdog_too_short_for_the_loop_is_warned_about(caplog):
    caplog.set_level(logging.INFO)
    SystemdNotifier("/run/n", 4.0)                      # WatchdogSec=8: fine
    assert not caplog.records
    SystemdNotifier("/run/n", 1.0)                      # WatchdogSec=2
    assert len(caplog.records) == 1 and "WatchdogSec=2.0s" in caplog.records[0].getMessage()


def test_outside_systemd_nothing_is_sent_and_nothing_fails():
    sd = SystemdNotifier.from_environment({"WATCHDOG_USEC": "2000000"}, pid=1)
    assert not sd.enabled and sd.interval is None
    sd.ready("x")
    sd.watchdog()
    sd.stopping()


def test_a_socket_that_is_gone_is_logged_once_and_never_raises(caplog):
    caplog.set_level(logging.INFO)
    sd = SystemdNotifier("/tmp/iim-no-such-dir/notify", 1.0)
    sd.ready("x")
    sd.status("y")
    sd.stopping()
    lines = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING


# -- the monitor's loop --------------------------------------------------------

class NullNotifier(Notifier):
    name = "null"

    def __init__(self):
        pass

    def send(self, notification):
        return DeliveryOutcome(DeliveryStatus.DELIVERED, "fake")


@pytest.fixture
def conf(tmp_path):
    c = cfg.ConfigOpts()
    iim_conf.register_opts(c)
    c([], project="masakarimonitors", default_config_files=[])
    c.set_override("journal_path", str(tmp_path / "journal.sqlite"),
                   group="introspectiveinstancemonitor")
    c.set_override("guest_monitoring_interval", 1, group="introspectiveinstancemonitor")
    return c


def make_monitor(conf, hv, sd):
    db = Database(conf.introspectiveinstancemonitor.journal_path)
    return Monitor(settings_from_conf(conf), hypervisor=hv, db=db, notifier=NullNotifier(),
                   pool=InlinePool(), clock=time.monotonic, wall=time.time,
                   spread=lambda: 0.0, systemd=sd)


def test_the_watchdog_is_pinged_only_while_the_scheduler_loop_turns(conf, sd_socket):
    hv = FakeHypervisor()
    hv.add(A, "vm-a")
    mon = make_monitor(conf, hv, SystemdNotifier(sd_socket.sock.getsockname(), 0.05))
    stuck, release = threading.Event(), threading.Event()

    def hung_journal(uuid):
        stuck.set()
        release.wait(10)
    mon.start()
    try:
        sd_socket.wait_for("READY=1", 5)
        sd_socket.wait_for("WATCHDOG=1", 3)
        sd_socket.wait_for("WATCHDOG=1", 3)
        # A journal write that hangs the loop (the listing runs on a
        # thread of its own and cannot).
        mon.results.restarted = hung_journal
        mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
        assert stuck.wait(5)
        sd_socket.read()                      # what was sent before it hung
        time.sleep(1.0)                      # 20 ping intervals
        assert [m for m in sd_socket.read() if "WATCHDOG=1" in m] == []
        release.set()
        sd_socket.wait_for("WATCHDOG=1", 3)   # turning again: pinging again
    finally:
        release.set()
        mon.stop()


def test_a_scheduler_that_fails_every_iteration_does_not_ping(conf, sd_socket):
    hv = FakeHypervisor()
    mon = make_monitor(conf, hv, SystemdNotifier(sd_socket.sock.getsockname(), 0.05))

    def broken_journal(uuid):
        raise DatabaseError("disk full")
    mon.start()
    try:
        sd_socket.wait_for("READY=1", 5)
        # A journal write that fails every iteration (the event is retried).
        mon.results.restarted = broken_journal
        mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
        sd_socket.wait_for("STATUS=scheduler iteration failed: disk full", 5)
        sd_socket.read()
        time.sleep(1.0)
        assert [m for m in sd_socket.read() if "WATCHDOG=1" in m] == []
    finally:
        mon.stop()


def test_first_start_waits_for_libvirt_before_listing(conf, sd_socket, caplog):
    """libvirt's connector has not connected yet when the scheduler starts:
    no "cannot list domains" warning for that, and READY=1 once it has."""
    caplog.set_level(logging.INFO)
    hv = FakeHypervisor()
    hv.add(A, "vm-a")
    hv.up = False
    listings = []
    real = hv.list_running_domains

    def listing():
        listings.append(hv.up)
        return real()
    hv.list_running_domains = listing
    mon = make_monitor(conf, hv, SystemdNotifier(sd_socket.sock.getsockname(), None))
    connects = threading.Timer(0.5, lambda: setattr(hv, "up", True))
    mon.start()
    connects.start()
    try:
        seen = sd_socket.wait_for("READY=1", 5)
        assert "libvirt connected" in seen[-1]
        deadline = time.monotonic() + 5
        while A not in mon.registry.watched and time.monotonic() < deadline:
            time.sleep(0.05)
        assert A in mon.registry.watched
    finally:
        connects.cancel()
        mon.stop()
    assert listings and listings[0] is True          # not listed before it connected
    assert not [r for r in caplog.records
                if r.levelno >= logging.WARNING and "list domains" in r.getMessage()]


def test_a_libvirt_that_stays_away_is_still_warned_about_once(conf, sd_socket, caplog,
                                                              monkeypatch):
    monkeypatch.setattr(service, "FIRST_CONNECT_WAIT", 0.3)
    caplog.set_level(logging.INFO)
    hv = FakeHypervisor()
    hv.up = False
    mon = make_monitor(conf, hv, SystemdNotifier(sd_socket.sock.getsockname(), None))
    mon.start()
    try:
        seen = sd_socket.wait_for("READY=1", 5)       # ready all the same
        assert "libvirt not connected" in seen[-1]
        time.sleep(2.5)                              # a few inventory retries
    finally:
        mon.stop()
    warnings = [r for r in caplog.records if "cannot list domains" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_a_stop_during_the_first_wait_is_prompt_and_sends_no_ready(conf, sd_socket):
    hv = FakeHypervisor()
    hv.up = False
    mon = make_monitor(conf, hv, SystemdNotifier(sd_socket.sock.getsockname(), None))
    mon.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    mon.stop()
    assert time.monotonic() - t0 < 1.0
    messages = sd_socket.read(0.5)
    assert "STOPPING=1\nSTATUS=stopping" in messages
    assert not [m for m in messages if "READY=1" in m]


# -- the sample unit -------------------------------------------------------------

def test_the_sample_unit_runs_the_monitor_as_a_notify_service_with_a_watchdog():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(os.path.join(ROOT, "etc", "systemd", "masakari-iim.service"))
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["WatchdogSec"] == "30" and svc["Restart"] == "on-failure"
    assert svc["TimeoutStopSec"] == "10"
    assert svc["ExecStart"].split() == [
        "masakari-iim", "--config-file", "/etc/masakarimonitors/masakarimonitors.conf"]
    # the watchdog period must leave the 1 s scheduler tick room to ping
    assert int(svc["WatchdogSec"]) / 2 > service.MAX_SLEEP
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(os.path.join(ROOT, "setup.cfg"))
    assert "etc/systemd/*" in setup["files"]["data_files"]
