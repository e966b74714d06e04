"""The scheduling loop, with a fake at the hypervisor boundary and the
real journal, outbox and sender behind it."""
import threading
import time

import pytest
from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.hypervisor.types import (
    AgentError, DomainState, ErrorKind, EventKind, LifecycleEvent)
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.monitor import Monitor
from masakarimonitors_iim.monitor.settings import settings_from_conf
from masakarimonitors_iim.notifier.base import DeliveryOutcome, DeliveryStatus, Notifier
from masakarimonitors_iim.verdict import Verdict
from masakarimonitors_iim.workers import WorkerPool
from tests.unit.fakes import FakeAgent, FakeHypervisor, InlinePool

A = "11111111-1111-1111-1111-111111111111"
B = "22222222-2222-2222-2222-222222222222"
NOAGENT = "33333333-3333-3333-3333-333333333333"


class RecordingNotifier(Notifier):
    name = "recording"

    def __init__(self):
        self.sent = []
        self.answer = DeliveryStatus.DELIVERED

    def send(self, notification):
        self.sent.append(notification)
        return DeliveryOutcome(self.answer, "fake")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class WallClock:
    """time.time, moved forward by ``offset`` when a test skips ahead."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.time() + self.offset


@pytest.fixture
def conf(tmp_path):
    c = cfg.ConfigOpts()
    iim_conf.register_opts(c)
    c([], project="masakarimonitors", default_config_files=[])
    c.set_override("hostname", "compute-1")
    c.set_override("journal_path", str(tmp_path / "journal.sqlite"),
                   group="introspectiveinstancemonitor")
    c.set_override("guest_monitoring_failure_threshold", 3,
                   group="introspectiveinstancemonitor")
    return c


class Rig:
    def __init__(self, conf, pool=None):
        self.conf = conf
        self.hv = FakeHypervisor()
        self.notifier = RecordingNotifier()
        self.clock = Clock()
        self.wall = WallClock()
        self.spread = 0.0
        self.pool = pool or InlinePool()
        self.open()

    def open(self):
        self.db = Database(self.conf.introspectiveinstancemonitor.journal_path)
        self.mon = Monitor(settings_from_conf(self.conf), hypervisor=self.hv, db=self.db,
                           notifier=self.notifier, pool=self.pool, clock=self.clock,
                           wall=self.wall, spread=lambda: self.spread)
        self.journal = self.mon.results.journal
        self.outbox = self.mon.results.outbox
        self.mon.results.recover()

    def rounds(self, n):
        """n probe rounds, each one interval apart, then deliver."""
        for _ in range(n):
            self.mon.step(wait=False)
            self.mon.step(wait=False)   # apply the results the jobs posted
            # and those of re-probes (a healthy guest's quick first call
            # unanswered: probes/first_call.py)
            self.mon.step(wait=False)
            self.clock.t += 10.0
        self.deliver()

    def deliver(self):
        self.mon.sender.run_once()

    def state(self, uuid):
        return self.journal.get(uuid).state


def test_threshold_failures_give_exactly_one_notification(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(2)
    assert rig.state(A) is State.HEALTHY
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(2)
    assert rig.state(A) is State.FAILING
    assert rig.notifier.sent == []
    rig.rounds(5)
    assert rig.state(A) is State.REPORTED
    assert len(rig.notifier.sent) == 1
    n = rig.notifier.sent[0]
    assert n.payload() == {"event": "LIFECYCLE", "instance_uuid": A,
                           "vir_domain_event": "STOPPED_FAILED"}
    assert (n.type, n.hostname) == ("VM", "compute-1")


def test_agent_timeout_is_set_on_the_domain(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    assert (A, 2.0) in rig.hv.prepared


def test_domain_without_agent_is_unmonitored_and_never_probed(conf):
    rig = Rig(conf)
    rig.hv.add(NOAGENT, "plain", has_agent=False)
    rig.rounds(5)
    assert rig.journal.get(NOAGENT) is None
    assert all(u != NOAGENT for u, _ in rig.hv.calls)
    assert rig.mon.snapshot()["unmonitored"] == {NOAGENT: "no guest agent channel"}


@pytest.mark.parametrize("state", [DomainState.PAUSED, DomainState.MIGRATING,
                                   DomainState.SHUTDOWN, DomainState.PMSUSPENDED])
def test_not_running_is_unknown_and_never_counts(conf, state):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.DOMAIN_NOT_RUNNING
    rig.hv.states[A] = state
    # list_running_domains hides non-running domains; keep it listed as
    # libvirt does for paused/migrating ones.
    rig.hv.list_running_domains = lambda: list(rig.hv.domains.values())
    rig.rounds(10)
    assert rig.state(A) is State.HEALTHY
    assert rig.notifier.sent == []


def test_libvirt_down_is_unknown(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.up = False
    rig.rounds(10)
    assert rig.state(A) is State.HEALTHY
    assert rig.notifier.sent == []


def test_recovery_before_threshold_sends_nothing(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(2)
    rig.hv.behaviour[A] = "ok"
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(2)
    assert rig.notifier.sent == []
    assert rig.state(A) is State.FAILING


def test_guest_never_healthy_is_never_reported(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rig.rounds(10)
    assert rig.state(A) is State.DISCOVERY
    assert rig.notifier.sent == []


def test_restart_of_monitor_neither_resends_nor_forgets(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.notifier.answer = DeliveryStatus.RETRY      # Masakari unreachable
    rig.rounds(3)
    assert rig.state(A) is State.REPORTED
    assert len(rig.outbox.pending()) == 1
    rig.db.close()

    # a new monitor process: same journal, guest still failing
    rig.notifier.answer = DeliveryStatus.DELIVERED
    rig.notifier.sent.clear()
    rig.open()
    rig.clock.t += 10_000          # past any back-off
    rig.wall.offset += 10_000
    rig.rounds(5)
    assert len(rig.notifier.sent) == 1               # the pending one, once
    assert rig.outbox.pending() == []
    assert rig.state(A) is State.REPORTED


def test_lifecycle_restart_starts_a_new_episode(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(3)
    assert len(rig.notifier.sent) == 1
    # Masakari restarted the VM: STARTED event, guest healthy again
    rig.hv.behaviour[A] = "ok"
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    rig.rounds(2)
    assert rig.state(A) is State.HEALTHY
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(3)
    assert len(rig.notifier.sent) == 2
    assert rig.journal.get(A).episode == 2


def test_domain_that_stops_is_no_longer_probed(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.states[A] = DomainState.SHUTOFF
    rig.mon.handle_event(LifecycleEvent(EventKind.STOPPED, A, "vm-a"))
    rig.hv.calls.clear()
    rig.rounds(3)
    assert rig.hv.calls == []
    assert rig.state(A) is State.DISCOVERY


def test_one_hung_guest_does_not_delay_another(conf):
    """A's ping blocks; B's verdict must still be applied meanwhile."""
    release = threading.Event()
    pool = WorkerPool(2)
    pool.start()
    rig = Rig(conf, pool=pool)
    rig.hv.add(A, "vm-a")
    rig.hv.add(B, "vm-b")
    rig.hv.behaviour[A] = lambda: release.wait(10)
    try:
        rig.mon.step(wait=False)
        deadline = time.monotonic() + 5
        while rig.state(B) is not State.HEALTHY and time.monotonic() < deadline:
            rig.mon.step(wait=False)
            time.sleep(0.01)
        assert rig.state(B) is State.HEALTHY
        assert rig.state(A) is State.DISCOVERY     # still waiting on its agent
    finally:
        release.set()
        pool.stop(2)


def test_blocked_exec_probe_is_unknown_but_ping_failures_still_count(conf, tmp_path):
    """qemu-ga blocks guest-exec: the exec probe says UNKNOWN (shown in
    status) and never FAILED, while ping keeps protecting the guest."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - name: app\n    probes:\n      - ping\n"
        "      - name: exec\n        params:\n          command: [/usr/bin/app-health]\n")
    conf.set_override("policy_file", str(policy), group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    info = {"version": "7.2", "supported_commands": [
        {"name": "guest-ping", "enabled": True, "success-response": True},
        {"name": "guest-exec", "enabled": False, "success-response": True},
        {"name": "guest-exec-status", "enabled": True, "success-response": True}]}
    real_command = FakeAgent.command

    def command(self, name, arguments=None, timeout=2.0):
        if name == "guest-info":
            return info
        if name == "guest-fsfreeze-status":
            return "thawed"   # asked at discovery: a freeze lists guest-exec disabled too
        assert name == "guest-ping", "a blocked RPC was called: %s" % name
        return real_command(self, name, arguments, timeout)

    FakeAgent.command = command
    try:
        rig.rounds(2)
        assert rig.state(A) is State.HEALTHY
        snap = rig.mon.snapshot()["monitored"][A]
        assert "guest-exec disabled" in snap["capability"]
        rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
        rig.rounds(3)
        assert rig.state(A) is State.REPORTED
        assert len(rig.notifier.sent) == 1
    finally:
        FakeAgent.command = real_command


def test_inventory_is_retried_every_second_while_libvirt_is_unreachable(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.hv.up = False
    rig.mon.step(wait=False)
    rig.hv.up = True
    rig.clock.t += 1.5          # far less than the 10 s interval
    rig.mon.step(wait=False)
    rig.mon.step(wait=False)
    assert rig.state(A) is State.HEALTHY


def test_domain_whose_agent_channel_is_removed_becomes_unmonitored(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.add(A, "vm-a", has_agent=False)      # channel hot-unplugged
    rig.hv.calls.clear()
    rig.rounds(3)
    assert rig.hv.calls == []
    assert A not in rig.mon.snapshot()["monitored"]
    assert rig.mon.snapshot()["unmonitored"] == {A: "no guest agent channel"}


class DeferredPool(InlinePool):
    """Holds jobs until the test runs them: a round still in flight."""

    def __init__(self):
        self.jobs = []

    def submit(self, job, cleanup=False):
        self.jobs.append(job)

    def run_all(self):
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


def test_a_round_from_before_a_restart_never_lands_on_the_new_boot(conf):
    pool = DeferredPool()
    rig = Rig(conf, pool=pool)
    rig.hv.add(A, "vm-a")
    rig.mon.step(wait=False)
    pool.run_all()
    rig.mon.step(wait=False)
    assert rig.state(A) is State.HEALTHY
    rig.clock.t += 10
    rig.mon.step(wait=False)                 # a round is now in flight
    stale = pool.jobs[:]
    pool.jobs.clear()
    # The domain stops and boots again while that round is out.
    rig.hv.states[A] = DomainState.SHUTOFF
    rig.mon.handle_event(LifecycleEvent(EventKind.STOPPED, A, "vm-a"))
    rig.mon.step(wait=False)
    rig.hv.states[A] = DomainState.RUNNING
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    rig.mon.step(wait=False)
    pool.jobs.clear()
    for job in stale:
        job()                                # the old round answers HEALTHY
    rig.mon.step(wait=False)
    assert rig.state(A) is State.DISCOVERY   # the new boot has proven nothing yet


def test_missed_reboot_is_not_reported_while_the_agent_reconnects(conf):
    """libvirt was down while the guest rebooted: no STARTED event, and a
    booting guest's agent is 'not connected'."""
    conf.set_override("agent_disconnect_grace", 60, group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    assert rig.state(A) is State.HEALTHY
    rig.hv.up = False
    rig.mon.handle_event(LifecycleEvent(EventKind.CONNECTION_LOST))
    rig.rounds(2)
    rig.hv.up = True
    rig.mon.handle_event(LifecycleEvent(EventKind.CONNECTION_RESTORED))
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rig.rounds(5)                            # 50 s < 60 s grace
    assert rig.notifier.sent == []
    rig.hv.behaviour[A] = "ok"               # booted
    rig.rounds(1)
    assert rig.state(A) is State.HEALTHY


def test_agent_gone_for_longer_than_the_grace_is_reported(conf):
    conf.set_override("agent_disconnect_grace", 30, group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.mon.handle_event(LifecycleEvent(EventKind.AGENT_DISCONNECTED, A, "vm-a"))
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rig.rounds(3)                            # within the grace: a shutdown, maybe
    assert rig.notifier.sent == []
    rig.rounds(4)
    assert len(rig.notifier.sent) == 1


def test_guest_resumed_with_a_wedged_kernel_is_still_reported(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.mon.handle_event(LifecycleEvent(EventKind.SUSPENDED, A, "vm-a"))
    rig.mon.handle_event(LifecycleEvent(EventKind.RESUMED, A, "vm-a"))
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(3)
    assert rig.state(A) is State.REPORTED
    assert len(rig.notifier.sent) == 1


def test_guest_info_refused_still_runs_the_probes(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    real_command = FakeAgent.command

    def command(self, name, arguments=None, timeout=2.0):
        if name == "guest-info":
            raise AgentError(ErrorKind.COMMAND_DISABLED, "Command guest-info has been disabled")
        return real_command(self, name, arguments, timeout)

    FakeAgent.command = command
    try:
        rig.rounds(1)
        assert rig.state(A) is State.HEALTHY
        rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
        rig.rounds(3)
        assert len(rig.notifier.sent) == 1
    finally:
        FakeAgent.command = real_command


def test_redefined_domain_reports_its_next_failure(conf):
    """Nova's hard reboot undefines and redefines the domain: the journal
    forgets it, and its next episode must still reach Masakari."""
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(3)
    assert len(rig.notifier.sent) == 1
    rig.hv.states[A] = DomainState.SHUTOFF
    rig.mon.handle_event(LifecycleEvent(EventKind.UNDEFINED, A, "vm-a"))
    rig.rounds(1)
    assert rig.journal.get(A) is None
    rig.hv.states[A] = DomainState.RUNNING
    rig.hv.behaviour[A] = "ok"
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    rig.rounds(2)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(3)
    assert len(rig.notifier.sent) == 2
    assert rig.journal.get(A).episode == 2


def test_a_disconnect_seen_while_a_round_runs_graces_that_round(conf):
    """The agent disconnects (a reboot begins) while a round is out: its
    "agent not connected" must not count, though the round began before."""
    pool = DeferredPool()
    rig = Rig(conf, pool=pool)
    rig.hv.add(A, "vm-a")
    rig.mon.step(wait=False)
    pool.run_all()
    rig.mon.step(wait=False)
    assert rig.state(A) is State.HEALTHY
    rig.clock.t += 10
    rig.hv.behaviour[A] = ErrorKind.AGENT_NOT_CONNECTED
    rig.mon.step(wait=False)                 # a round is now in flight
    rig.mon.handle_event(LifecycleEvent(EventKind.AGENT_DISCONNECTED, A, "vm-a"))
    pool.run_all()                           # it fails: agent not connected
    rig.mon.step(wait=False)
    rec = rig.journal.get(A)
    assert (rec.state, rec.failures) == (State.HEALTHY, 0)
    assert "within" in rec.last_reason


def test_first_rounds_after_a_restart_are_spread_but_suspects_go_first(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.hv.add(B, "vm-b")
    rig.rounds(1)
    rig.hv.behaviour[B] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(1)
    assert (rig.state(A), rig.state(B)) == (State.HEALTHY, State.FAILING)
    rig.db.close()

    rig.spread = 0.5                          # half an interval
    rig.open()
    rig.hv.calls.clear()
    rig.mon.step(wait=False)
    assert {u for u, _ in rig.hv.calls} == {B}   # the suspect at once
    rig.clock.t += 5.0
    rig.mon.step(wait=False)
    assert {u for u, _ in rig.hv.calls} == {A, B}


def test_a_domain_no_longer_monitored_is_forgotten_by_the_hypervisor(conf):
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.states[A] = DomainState.SHUTOFF
    rig.mon.handle_event(LifecycleEvent(EventKind.STOPPED, A, "vm-a"))
    rig.mon.step(wait=False)
    assert rig.hv.forgotten == [A]


# -- the status snapshot --------------------------------------------------------

def test_snapshot_shows_display_names_each_probes_last_run_and_graces(conf):
    from masakarimonitors_iim.hypervisor.types import DomainInfo, NovaMetadata

    conf.set_override("guest_monitoring_startup_grace", 60,
                      group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "instance-00000001")
    rig.hv.domains[A] = DomainInfo(A, "instance-00000001", DomainState.RUNNING, True,
                                   NovaMetadata(instance_name="web-1"))
    rig.hv.add(NOAGENT, "instance-00000002", has_agent=False)
    rig.hv.domains[NOAGENT] = DomainInfo(NOAGENT, "instance-00000002", DomainState.RUNNING,
                                         False, NovaMetadata(instance_name="db-1"))
    before = rig.wall()
    rig.rounds(1)                 # watched at t=1000, probed, clock now 1010
    after = rig.wall()
    snap = rig.mon.snapshot()
    a = snap["monitored"][A]
    assert (a["name"], a["display_name"]) == ("instance-00000001", "web-1")
    (ping,) = a["probes"]
    assert (ping["name"], ping["verdict"], ping["skipped"]) == ("ping", "HEALTHY", False)
    assert before <= ping["at"] <= after and ping["seconds"] >= 0
    # the startup grace ends 60 s after the watch, 50 s after "now"
    assert abs(a["startup_grace_until"] - (snap["written_at"] + 50)) < 0.01
    assert a["disconnect_grace_until"] is None      # the agent answered
    assert snap["unmonitored_names"] == {
        NOAGENT: {"name": "instance-00000002", "display_name": "db-1"}}

    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(1)
    (ping,) = rig.mon.snapshot()["monitored"][A]["probes"]
    assert ping["verdict"] == "FAILED" and "agent-timeout" in ping["reason"]

    # a new boot: the old boot's probe results say nothing about it
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "instance-00000001"))
    rig.mon.step(wait=False)
    a = rig.mon.snapshot()["monitored"][A]
    assert a["probes"] == [] and a["disconnect_grace_until"] is not None


def test_a_round_that_ran_no_probe_keeps_the_last_probe_results():
    from masakarimonitors_iim.hypervisor.types import DomainInfo
    from masakarimonitors_iim.monitor.domains import Watched
    from masakarimonitors_iim.policy import model as policy_model
    from masakarimonitors_iim.prober import ProbeRun, RoundOutcome
    from masakarimonitors_iim.verdict import ProbeResult

    w = Watched(info=DomainInfo(A, "vm-a", DomainState.RUNNING, True),
                policy=policy_model.EffectivePolicy(
                    enabled=True, probes=(), interval=10, timeout=2, failure_threshold=3,
                    success_threshold=1, startup_grace=0))
    ran = (ProbeRun("ping", ProbeResult.healthy(), 0.002),)
    w.learn(RoundOutcome(ProbeResult.healthy(), agent_answered=True, probes=ran), 500.0)
    w.learn(RoundOutcome(ProbeResult.unknown("monitor error: boom")), 510.0)
    assert (w.last_probes, w.last_probes_at) == (ran, 500.0)


# -- faults: the journal and the daemon -------------------------------------------

def _fail_saves(rig, times, message="database is locked"):
    """The next ``times`` journal writes fail as SQLite's would."""
    from masakarimonitors_iim.db import DatabaseError

    real_save = rig.journal.save
    left = [times]

    def save(*args, **kwargs):
        if left[0] > 0:
            left[0] -= 1
            raise DatabaseError("journal database %s: %s" % (rig.db.path, message))
        return real_save(*args, **kwargs)

    rig.journal.save = save
    return left


def test_a_restart_whose_journal_write_fails_is_written_later_not_lost(conf):
    """The failing guest restarts (STARTED) while the journal is locked:
    the event is kept and written next iteration, so the old boot's
    streak (2 of 3) cannot report on the new boot's first timeout."""
    from masakarimonitors_iim.db import DatabaseError

    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(2)
    assert (rig.state(A), rig.journal.get(A).failures) == (State.FAILING, 2)

    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    left = _fail_saves(rig, 1)
    with pytest.raises(DatabaseError):
        rig.mon.step(wait=False)
    assert left == [0] and rig.state(A) is State.FAILING   # not written yet
    rig.mon.step(wait=False)                                # written now
    assert rig.state(A) is State.DISCOVERY

    rig.rounds(3)            # the new boot's agent times out: never seen healthy
    assert rig.notifier.sent == []
    assert rig.state(A) is State.DISCOVERY


def test_a_held_event_keeps_its_place_before_later_ones(conf):
    """STOPPED fails to be written, then STARTED arrives: they are applied
    in that order once the journal works, whatever the retries."""
    from masakarimonitors_iim.db import DatabaseError

    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    rig.hv.states[A] = DomainState.SHUTOFF
    rig.mon.handle_event(LifecycleEvent(EventKind.STOPPED, A, "vm-a"))
    rig.hv.states[A] = DomainState.RUNNING
    rig.mon.handle_event(LifecycleEvent(EventKind.STARTED, A, "vm-a"))
    _fail_saves(rig, 3, "database or disk is full")
    for _ in range(3):
        with pytest.raises(DatabaseError):
            rig.mon.step(wait=False)
        assert A in rig.mon.registry.watched     # the stop is not applied half-way
    rig.mon.step(wait=False)
    assert rig.state(A) is State.DISCOVERY
    assert rig.hv.forgotten == [A]               # the stop was applied, once
    rig.rounds(2)
    assert rig.state(A) is State.HEALTHY         # and the start after it


def test_a_job_failing_for_another_reason_is_not_retried_forever(conf):
    """Only a journal write is worth repeating: a job that raises anything
    else would raise again, and must not wedge the scheduler."""
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("a bug")

    rig.mon.jobs.post(broken)
    with pytest.raises(ValueError):
        rig.mon.step(wait=False)
    rig.rounds(1)
    assert calls == [1]
    assert rig.state(A) is State.HEALTHY


def test_an_outcome_that_cannot_be_written_is_dropped_not_held(conf):
    """A round's verdict is not kept: the next round brings a fresh one,
    and a write that keeps failing for one domain must not stop the rest."""
    from masakarimonitors_iim.db import DatabaseError

    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.hv.add(B, "vm-b")
    rig.rounds(1)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    # A full-timeout round, so its FAILED is the verdict whose write fails
    # (no quick first call: the agent did not answer fast last time)
    rig.mon.registry.watched[A].first_answer_seconds = None
    rig.mon.step(wait=False)                # both rounds run, outcomes queued
    _fail_saves(rig, 1)
    with pytest.raises(DatabaseError):
        rig.mon.step(wait=False)            # A's verdict: not written, dropped
    rig.mon.step(wait=False)                # B's verdict: applied
    assert rig.mon.jobs.held is None
    rig.clock.t += 10.0
    rig.rounds(3)
    assert rig.state(A) is State.REPORTED and rig.state(B) is State.HEALTHY


def test_sighup_with_a_hostile_policy_keeps_the_previous_one(conf, tmp_path, caplog):
    from tests.unit.policy.test_policy_hostile import LAUGHS

    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: slow\n    interval: 30\n")
    conf.set_override("policy_file", str(policy), group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    in_force = rig.mon.registry.policy_file
    assert rig.mon.registry.watched[A].policy.interval == 30

    for text in (LAUGHS, "version: 1\nrules: !!set {a}\n", "version: 1\nrules: " + "[" * 9999):
        policy.write_text(text)
        caplog.clear()
        rig.mon.reload()
        rig.mon.step(wait=False)
        assert rig.mon.registry.policy_file is in_force
        assert rig.mon.registry.watched[A].policy.interval == 30
        (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert "previous policy stays in force" in line
        assert "\n" not in line and len(line) < 800


def test_stop_releases_the_journal_lock(conf):
    from masakarimonitors_iim.monitor.lock import JournalLock, JournalLocked

    path = conf.introspectiveinstancemonitor.journal_path
    held = JournalLock(path)
    held.acquire()
    rig = Rig(conf)
    rig.mon._journal_lock = held
    with pytest.raises(JournalLocked):
        JournalLock(path).acquire()
    rig.mon.stop()
    other = JournalLock(path)
    other.acquire()              # free once the monitor stopped
    other.release()


def test_a_libvirt_outage_is_one_log_line_whatever_its_wording(conf, caplog):
    """Hung, then dropped by keepalive, then refused while reconnecting:
    three wordings of one outage, one line; and one when it ends."""
    import logging

    from masakarimonitors_iim.hypervisor.types import HypervisorUnavailable

    caplog.set_level(logging.INFO)
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    listing = rig.hv.list_running_domains
    for why in ("connection closed due to keepalive timeout", "not connected to libvirt",
                "not connected to libvirt", "Cannot recv data: Connection reset by peer"):
        def down(why=why):
            raise HypervisorUnavailable(why)
        rig.hv.list_running_domains = down
        rig.clock.t += 10.0
        rig.mon.step(wait=False)
    rig.hv.list_running_domains = listing
    rig.clock.t += 10.0
    rig.mon.step(wait=False)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "cannot list domains" in m]) == 1
    assert len([m for m in messages if "listing domains works again" in m]) == 1


def test_a_lost_libvirt_connection_makes_every_verdict_unknown_at_once(conf, caplog):
    """A round still waiting on a hung libvirtd returns only when libvirtd
    continues: the loss itself must make the verdicts UNKNOWN (never
    counted), or status would show the last HEALTHY all along."""
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.hv.add(B, "vm-b")
    rig.rounds(2)
    generation = rig.mon.registry.watched[A].generation
    rig.mon.handle_event(LifecycleEvent(EventKind.CONNECTION_LOST, detail="libvirtd answered "
                                        "no call for 20 s"))
    rig.mon.step(wait=False)
    for uuid in (A, B):
        w = rig.mon.registry.watched[uuid]
        assert w.last_result.verdict is Verdict.UNKNOWN, w.last_result
        assert "libvirt connection lost (libvirtd answered no call" in w.last_result.reason
        assert rig.state(uuid) is State.HEALTHY     # UNKNOWN moved nothing
        assert rig.journal.get(uuid).last_verdict is Verdict.UNKNOWN
    # a round that was waiting meanwhile is stale when it returns
    assert rig.mon.registry.watched[A].generation == generation + 1
    assert rig.notifier.sent == []
