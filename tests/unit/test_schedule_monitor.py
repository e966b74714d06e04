"""The schedule inside the real Monitor: lanes, the backlog it reports,
the listing on its own thread, and one number for agent slots."""
import logging
import threading
import time

import pytest

from masakarimonitors_iim.hypervisor.types import ErrorKind, EventKind, LifecycleEvent
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.monitor import wiring
from tests.unit.test_monitor import A, B, DeferredPool, Rig, conf  # noqa: F401  (conf: fixture)

C = "44444444-4444-4444-4444-444444444444"


def finish_listing(rig):
    """Step until the listing in flight is applied, then stop the lister."""
    try:
        deadline = time.monotonic() + 5
        while rig.mon.inventory.listing and time.monotonic() < deadline:
            rig.mon.step(wait=False)
            time.sleep(0.01)
        assert not rig.mon.inventory.listing
    finally:
        rig.mon.inventory.lister.stop(2)


def started(rig, pool):
    """uuids of the rounds handed to the pool and not yet run."""
    return {job_uuid(job) for job in pool.jobs}


def job_uuid(job):
    # The job closes over the Watched it probes.
    for cell in job.__closure__ or ():
        w = cell.cell_contents
        if hasattr(w, "info"):
            return w.info.uuid
    raise AssertionError("not a round job")


def run(pool, uuid):
    job = next(j for j in pool.jobs if job_uuid(j) == uuid)
    pool.jobs.remove(job)
    job()


def settle(rig, pool):
    rig.mon.step(wait=False)
    for _ in range(4):
        pool.run_all()
        rig.mon.step(wait=False)


def test_hung_suspects_hold_their_share_and_healthy_rounds_go_on(conf, caplog):  # noqa: F811
    """2 slots: the suspect lane holds 1. A and B time out (suspects);
    C stays healthy. While A's round hangs, B waits (a backlog, said once)
    and C's rounds start on time on the other slot."""
    caplog.set_level(logging.INFO)
    conf.set_override("probe_workers", 2, group="introspectiveinstancemonitor")
    pool = DeferredPool()
    rig = Rig(conf, pool=pool)
    for uuid, name in ((A, "vm-a"), (B, "vm-b"), (C, "vm-c")):
        rig.hv.add(uuid, name)
    settle(rig, pool)                        # first rounds: all healthy
    rig.hv.behaviour[A] = rig.hv.behaviour[B] = ErrorKind.AGENT_TIMEOUT
    rig.clock.t += 10.0
    settle(rig, pool)                        # A and B time out: suspects now
    assert (rig.state(A), rig.state(B), rig.state(C)) == (
        State.FAILING, State.FAILING, State.HEALTHY)

    rig.clock.t += 10.0
    rig.mon.step(wait=False)
    assert started(rig, pool) == {A, C}      # C first; one suspect; B waits
    assert rig.mon.snapshot()["backlog"]["overdue"] == 1
    run(pool, C)
    rig.clock.t += 2.0                       # A hangs for its whole timeout
    rig.mon.step(wait=False)
    assert started(rig, pool) == {A}         # the free slot is not B's to take
    rig.clock.t += 8.0
    rig.mon.step(wait=False)
    assert started(rig, pool) == {A, C}      # C's next round, on time
    backlog = rig.mon.snapshot()["backlog"]
    assert (backlog["overdue"], backlog["lanes"]) == (1, {"healthy": 0, "suspect": 1})
    assert backlog["oldest_seconds"] == pytest.approx(10.0)

    run(pool, A)
    run(pool, C)
    rig.mon.step(wait=False)
    assert started(rig, pool) == {B}
    pool.run_all()
    rig.mon.step(wait=False)
    assert rig.mon.snapshot()["backlog"]["overdue"] == 0
    rig.hv.behaviour.clear()                 # A and B answer again
    for _ in range(6):                       # said to clear after 30 s without one
        rig.clock.t += 10.0
        settle(rig, pool)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("probe backlog: 1 rounds")]) == 1
    assert len([m for m in messages if m.startswith("probe backlog cleared")]) == 1
    metrics = rig.mon.metrics.registry
    assert metrics.get_sample_value("masakari_iim_probe_backlog") == 0.0


def test_a_slow_listing_never_delays_a_due_round(conf):  # noqa: F811
    """The listing runs on its own thread: while libvirt takes its time
    over it, rounds already due still start."""
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    release = threading.Event()
    listing = rig.hv.list_running_domains

    def slow():
        release.wait(10)
        return listing()
    rig.hv.list_running_domains = slow
    rig.mon.inventory.lister.start()
    try:
        rig.hv.calls.clear()
        rig.clock.t += 10.0
        rig.mon.step(wait=False)             # asks for a listing, and probes A
        assert rig.mon.inventory.listing
        assert {u for u, _ in rig.hv.calls} == {A}
    finally:
        release.set()
    finish_listing(rig)


def test_a_domain_that_stopped_while_the_list_was_read_is_not_watched_again(conf):  # noqa: F811
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(1)
    taken = threading.Event()
    release = threading.Event()
    listing = rig.hv.list_running_domains

    def before_the_stop():
        domains = listing()                  # A still runs when the list is read
        taken.set()
        release.wait(10)
        return domains
    rig.hv.list_running_domains = before_the_stop
    rig.mon.inventory.lister.start()
    try:
        rig.clock.t += 10.0
        rig.mon.step(wait=False)
        assert taken.wait(5)
        rig.mon.handle_event(LifecycleEvent(EventKind.STOPPED, A, "vm-a"))
        rig.mon.step(wait=False)
        assert A not in rig.mon.registry.watched
    finally:
        release.set()
    finish_listing(rig)
    assert A not in rig.mon.registry.watched
    assert A not in rig.mon.dispatch.schedule


def test_probe_workers_is_one_number_end_to_end(conf):  # noqa: F811
    """Worker threads, the hypervisor's agent call slots and the
    scheduler's slots all come from probe_workers."""
    conf.set_override("probe_workers", 7, group="introspectiveinstancemonitor")
    mon = wiring.build_monitor(conf)
    try:
        assert len(mon._pool._threads) == 7
        assert mon._hv._max_agent_calls == 7
        assert mon.dispatch.schedule.slots == 7
        assert mon.dispatch.schedule.suspect_slots == 6
    finally:
        mon.stop()


def test_domains_watched_together_get_phases_of_their_own(conf):  # noqa: F811
    """A fresh journal: every domain's first round is at once (none is
    known healthy); the second at a random point of the interval's second half,
    then one interval after the last, so they do not stay one burst."""
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.spread = 0.25
    rig.mon.step(wait=False)
    rig.mon.step(wait=False)
    assert rig.mon.registry.watched[A].next_due == rig.clock.t + 8.75
    rig.clock.t += 8.75
    rig.mon.step(wait=False)
    rig.mon.step(wait=False)
    assert rig.mon.registry.watched[A].next_due == rig.clock.t + 10.0


def test_stop_is_prompt_while_libvirtd_hangs_a_listing_and_a_round(conf, monkeypatch):  # noqa: F811
    """SIGTERM allows 5 s; stop() keeps to 3 s although the inventory
    thread and a worker are stuck in calls that never return."""
    from masakarimonitors_iim.db import Database
    from masakarimonitors_iim.monitor.service import Monitor
    from masakarimonitors_iim.monitor.settings import settings_from_conf
    from masakarimonitors_iim.workers import WorkerPool
    from tests.unit.fakes import FakeAgent, FakeHypervisor
    from tests.unit.test_monitor import RecordingNotifier

    hv = FakeHypervisor()
    hv.add(A, "vm-a")
    hv.add(B, "vm-b")
    never, listing_hung, round_hung = threading.Event(), threading.Event(), threading.Event()
    listed = []
    real_listing, real_command = hv.list_running_domains, FakeAgent.command

    def listing():
        if listed:
            listing_hung.set()
            never.wait(30)
        listed.append(1)
        return real_listing()

    def command(agent, name, arguments=None, timeout=2.0):
        if agent.domain_uuid == B:
            round_hung.set()
            never.wait(30)
        return real_command(agent, name, arguments, timeout)
    hv.list_running_domains = listing
    monkeypatch.setattr(FakeAgent, "command", command)
    mon = Monitor(settings_from_conf(conf), hypervisor=hv,
                  db=Database(conf.introspectiveinstancemonitor.journal_path),
                  notifier=RecordingNotifier(), pool=WorkerPool(2),
                  clock=time.monotonic, wall=time.time)
    try:
        mon.start()
        assert round_hung.wait(5)
        mon.reload()                             # asks for a listing: it hangs
        assert listing_hung.wait(5)
        t = time.monotonic()
        mon.stop()
        assert time.monotonic() - t < 3.0
    finally:
        never.set()


class FlaggedPool(DeferredPool):
    """Keeps clean-up jobs apart from rounds."""

    def __init__(self):
        super().__init__()
        self.cleanups = []

    def submit(self, job, cleanup=False):
        (self.cleanups if cleanup else self.jobs).append(job)


def test_closing_probes_waits_for_and_holds_a_slot_of_the_suspect_share(conf):  # noqa: F811
    """2 slots, A's suspect round hangs in the suspect slot: B's probes are
    closed (B stopped) only once a suspect slot is free, and while closing
    they hold it, so no round is promised a slot that is taken."""
    from masakarimonitors_iim.hypervisor.types import DomainState

    conf.set_override("probe_workers", 2, group="introspectiveinstancemonitor")
    pool = FlaggedPool()
    rig = Rig(conf, pool=pool)
    for uuid, name in ((A, "vm-a"), (B, "vm-b"), (C, "vm-c")):
        rig.hv.add(uuid, name)
    settle(rig, pool)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.clock.t += 10.0
    settle(rig, pool)
    assert rig.state(A) is State.FAILING
    until_started(rig, pool, A)               # A's suspect round holds the suspect slot

    rig.hv.states[B] = DomainState.SHUTOFF
    rig.mon.handle_event(LifecycleEvent(EventKind.STOPPED, B, "vm-b"))
    rig.mon.step(wait=False)
    assert pool.cleanups == []                # waits: the suspect share is full
    run(pool, A)
    rig.mon.step(wait=False)
    assert len(pool.cleanups) == 1            # started on the freed suspect slot
    schedule = rig.mon.dispatch.schedule
    assert schedule.suspect_running(rig.clock.t) == 1
    rig.clock.t += 10.0
    rig.mon.step(wait=False)
    assert A not in started(rig, pool)        # due, but the clean-up holds its share
    assert rig.mon.snapshot()["backlog"]["lanes"]["suspect"] == 1
    pool.cleanups.pop()()
    pool.run_all()
    rig.mon.step(wait=False)
    assert started(rig, pool) == {A}
    assert len(schedule.running) == 1


def until_started(rig, pool, uuid):
    """Step a second at a time, running the other rounds at once, until
    ``uuid``'s round is handed to the pool."""
    for _ in range(30):
        rig.clock.t += 1.0
        rig.mon.step(wait=False)
        for other in started(rig, pool) - {uuid}:
            run(pool, other)
        rig.mon.step(wait=False)
        if uuid in started(rig, pool):
            return
    raise AssertionError("no round of %s started" % uuid)


def test_at_stop_clean_ups_no_longer_wait_for_a_slot(conf):  # noqa: F811
    conf.set_override("probe_workers", 1, group="introspectiveinstancemonitor")
    pool = FlaggedPool()
    rig = Rig(conf, pool=pool)
    rig.hv.add(A, "vm-a")
    rig.hv.add(B, "vm-b")
    settle(rig, pool)
    rig.clock.t += 10.0
    rig.mon.step(wait=False)                  # one round holds the only slot
    assert len(pool.jobs) == 1
    rig.mon.registry.close_probes(rig.mon.registry.watched[B])
    rig.mon.step(wait=False)
    assert pool.cleanups == []
    rig.mon.dispatch.stopping()
    assert len(pool.cleanups) == 1
    rig.mon.registry.close_probes(rig.mon.registry.watched[A])
    assert len(pool.cleanups) == 2
