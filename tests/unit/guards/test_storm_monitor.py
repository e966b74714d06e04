"""The storm guard behind the real journal writer and monitor: reports
held during a storm, sent when it clears for a domain still failing,
never for one that recovered."""
import pytest
from oslo_config import cfg
from prometheus_client import generate_latest

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.guards.storm import StormGuard, StormSettings, counted
from masakarimonitors_iim.hypervisor.types import DomainState, ErrorKind, EventKind, \
    LifecycleEvent
from masakarimonitors_iim.journal.machine import State, Thresholds
from masakarimonitors_iim.monitor import Monitor
from masakarimonitors_iim.monitor.results import JournalWriter
from masakarimonitors_iim.monitor.settings import settings_from_conf
from masakarimonitors_iim.notifier.base import DeliveryOutcome, DeliveryStatus, Notifier
from masakarimonitors_iim.verdict import ProbeResult
from tests.unit.fakes import FakeHypervisor, InlinePool

THRESHOLDS = Thresholds(failure=3, success=1)
FAILED = ProbeResult.failed("guest agent did not answer in time")
HEALTHY = ProbeResult.healthy()


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class Writer:
    """A JournalWriter with only the storm guard, on a host watching a-d."""

    def __init__(self, tmp_path, settings):
        self.wall = Clock(1_700_000_000.0)
        self.watched = {"a", "b", "c", "d"}
        self.guard = StormGuard(settings, watched=lambda: self.watched,
                                counts_for=lambda uuid: counted(self.writer.record(uuid)))
        self.writer = JournalWriter(Database(str(tmp_path / "j.sqlite")), hostname="h",
                                    event="LIFECYCLE", on_queued=lambda: None,
                                    wall=self.wall, guards=[self.guard])
        for uuid in sorted(self.watched):
            self.writer.watched(uuid, "vm-" + uuid)
            self.writer.verdict(uuid, "vm-" + uuid, HEALTHY, THRESHOLDS)

    def round(self, failed):
        self.wall.t += 10.0
        for uuid in sorted(self.watched):
            self.writer.verdict(uuid, "vm-" + uuid, FAILED if uuid in failed else HEALTHY,
                                THRESHOLDS)

    def record(self, uuid):
        return self.writer.journal.get(uuid)

    def reported(self):
        return sorted(e.notification.payload()["instance_uuid"]
                      for e in self.writer.outbox.rows())


def test_held_during_the_storm_then_only_the_domain_still_failing_is_reported(tmp_path):
    w = Writer(tmp_path, StormSettings(min_domains=2, ratio=0.5, window=30.0))
    for _ in range(6):
        w.round(failed={"a", "b", "c"})
    assert w.reported() == []
    for uuid in ("a", "b", "c"):
        rec = w.record(uuid)
        assert rec.state is State.FAILING, rec
        assert rec.held.startswith("storm guard: 3 of 4 domains"), rec.held
    assert w.record("d").state is State.HEALTHY

    # b and c recover: one failing of four is below the trip condition...
    w.round(failed={"a"})
    assert w.record("b").state is State.HEALTHY and not w.record("b").held
    # ...but only a whole window later does the guard clear.
    w.round(failed={"a"})
    w.round(failed={"a"})
    assert w.reported() == []
    w.round(failed={"a"})
    assert w.reported() == ["a"]
    assert w.record("a").state is State.REPORTED and not w.record("a").held
    for _ in range(10):
        w.round(failed={"a"})
    assert w.reported() == ["a"]


def test_a_domain_that_goes_away_can_clear_the_storm(tmp_path):
    w = Writer(tmp_path, StormSettings(min_domains=2, ratio=0.5, window=30.0))
    for _ in range(4):
        w.round(failed={"a", "b"})
    assert w.reported() == [] and w.guard.state.holding
    w.watched.discard("b")                     # destroyed: no longer watched
    w.writer.unwatched("b")
    for _ in range(3):
        w.round(failed={"a"})
    assert w.reported() == []
    w.round(failed={"a"})
    assert w.reported() == ["a"]


def test_guests_hung_for_good_after_the_storm_are_reported_after_max_hold(tmp_path):
    """Two of four stay hung after the storm (they need a reset) and meet
    the trip count for ever: reported, once each, when the hold ends."""
    w = Writer(tmp_path, StormSettings(min_domains=2, ratio=0.5, window=30.0,
                                       max_hold=120.0))
    w.round(failed={"a", "b", "c"})            # trips at +10 s
    assert w.guard.state.holding
    for _ in range(11):                        # c recovers; a and b stay hung to +120 s
        w.round(failed={"a", "b"})
    assert w.reported() == []
    assert "at the latest" in w.record("a").held, w.record("a").held
    w.round(failed={"a", "b"})                 # +130 s: since + max_hold
    assert w.reported() == ["a", "b"]
    assert not w.guard.state.holding
    for _ in range(30):                        # the same failures never trip it again
        w.round(failed={"a", "b"})
    assert w.reported() == ["a", "b"] and not w.guard.state.holding
    for uuid in ("a", "b"):
        rec = w.record(uuid)
        assert rec.state is State.REPORTED and not rec.held, rec


def test_a_domain_reported_before_the_storm_does_not_keep_it_holding(tmp_path):
    """a was reported long before and never recovered; b and c fail
    together, b recovers: c alone is below the trip count and is reported
    after one calm window, not held for storm_max_hold."""
    w = Writer(tmp_path, StormSettings(min_domains=2, ratio=0.5, window=30.0))
    for _ in range(7):                         # a fails from +10 s, reported at +30 s
        w.round(failed={"a"})
    assert w.reported() == ["a"]
    w.round(failed={"a", "b", "c"})            # +80 s: two new failures trip it
    assert w.guard.state.holding
    for _ in range(3):                         # c's report due at +100 s: held
        w.round(failed={"a", "c"})
    assert w.reported() == ["a"] and w.record("c").held.startswith("storm guard")
    w.round(failed={"a", "c"})                 # +120 s: a window after b recovered
    assert w.reported() == ["a", "c"]
    assert not w.guard.state.holding


def test_a_small_host_with_the_default_options_reports_two_independent_failures(tmp_path):
    w = Writer(tmp_path, StormSettings())
    for _ in range(3):
        w.round(failed={"a", "c"})
    assert w.reported() == ["a", "c"]
    assert not w.guard.state.holding


def test_guests_booting_again_do_not_make_a_storm_of_one_real_failure(tmp_path):
    w = Writer(tmp_path, StormSettings(min_domains=2, ratio=0.5, window=30.0))
    for uuid in ("a", "b", "c"):
        w.writer.restarted(uuid)               # DISCOVERY: their agents are not up yet
    for _ in range(3):
        w.round(failed={"a", "b", "c", "d"})
    assert w.reported() == ["d"]
    assert not w.guard.state.holding


# -- the monitor: options, wiring, snapshot -----------------------------------

class Notifications(Notifier):
    name = "recording"

    def __init__(self):
        self.sent = []

    def send(self, notification):
        self.sent.append(notification.payload()["instance_uuid"])
        return DeliveryOutcome(DeliveryStatus.DELIVERED, "fake")


@pytest.fixture
def conf(tmp_path):
    c = cfg.ConfigOpts()
    iim_conf.register_opts(c)
    c([], project="masakarimonitors", default_config_files=[])
    c.set_override("hostname", "compute-1")
    group = "introspectiveinstancemonitor"
    c.set_override("journal_path", str(tmp_path / "journal.sqlite"), group=group)
    c.set_override("guest_monitoring_failure_threshold", 3, group=group)
    c.set_override("storm_min_domains", 2, group=group)
    c.set_override("storm_ratio", 0.5, group=group)
    c.set_override("storm_window", 30, group=group)
    c.set_override("storm_max_hold", 600, group=group)
    return c


def storm_gauge(mon):
    for line in generate_latest(mon.metrics.registry).decode().splitlines():
        if line.startswith("masakari_iim_storm_holding "):
            return float(line.split()[1])
    return None


def test_monitor_holds_a_storm_shows_it_and_reports_once_it_clears(conf, caplog):
    hv, notifier = FakeHypervisor(), Notifications()
    clock, wall = Clock(1000.0), Clock(1_700_000_000.0)
    mon = Monitor(settings_from_conf(conf), hypervisor=hv,
                  db=Database(conf.introspectiveinstancemonitor.journal_path),
                  notifier=notifier, pool=InlinePool(), clock=clock, wall=wall,
                  spread=lambda: 0.0)
    assert mon.settings.storm == StormSettings(min_domains=2, ratio=0.5, window=30.0,
                                               max_hold=600.0)
    A, B, C = ("%s1111111-1111-1111-1111-111111111111" % n for n in "abc")
    for uuid in (A, B, C):
        hv.add(uuid, "vm-" + uuid[0])

    def rounds(n):
        for _ in range(n):
            mon.step(wait=False)
            mon.step(wait=False)
            clock.t += 10.0
            wall.t += 10.0
        mon.sender.run_once()

    rounds(2)
    assert storm_gauge(mon) == 0.0
    hv.behaviour[A] = hv.behaviour[B] = ErrorKind.AGENT_TIMEOUT
    rounds(6)
    assert notifier.sent == []
    snap = mon.snapshot()["storm"]
    assert (snap["holding"], snap["failing"], snap["watched"]) == (True, 2, 3), snap
    assert storm_gauge(mon) == 1.0
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 1 and "2 of 3 monitored domains" in critical[0].getMessage()

    hv.states[B] = DomainState.SHUTOFF          # destroyed
    mon.handle_event(LifecycleEvent(EventKind.STOPPED, B, "vm-b"))
    rounds(3)
    assert notifier.sent == []                  # a whole window must pass calm
    rounds(2)
    assert notifier.sent == [A]
    assert not mon.snapshot()["storm"]["holding"]
    assert storm_gauge(mon) == 0.0
    rounds(5)
    assert notifier.sent == [A]
    assert len([r for r in caplog.records if r.levelname == "CRITICAL"]) == 1

