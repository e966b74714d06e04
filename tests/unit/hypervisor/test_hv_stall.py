"""Telling a stalled libvirtd from one long call (hypervisor.stall)."""
from __future__ import annotations

import contextlib
import threading
import types

import hv_recorded
import pytest

from masakarimonitors_iim.hypervisor import stall
from masakarimonitors_iim.hypervisor.stall import StallWatch, decide
from masakarimonitors_iim.hypervisor.types import HypervisorUnavailable


@pytest.mark.parametrize("waited, probing, lost, probe", [
    # limit 20 s (keepalive 5 s x (3 + 1)): the probe from half of it
    (0.0, False, None, False),                       # nothing waits
    (9.9, False, None, False),                       # below half the limit
    (10.0, False, None, True),                       # half: ask libvirtd once
    (10.0, True, None, False),                       # that probe still runs
    (19.9, True, None, False),
    (20.0, False, "libvirtd answered no call for 20 s", False),   # the limit
    (20.0, True, "libvirtd answered no call for 20 s", False),
    (63.4, False, "libvirtd answered no call for 63 s", False),
])
def test_decide(waited, probing, lost, probe):
    assert decide(waited, 20.0, probing) == (lost, probe)


class Conn:
    """A connection whose getLibVersion blocks until ``answer`` is set."""

    def __init__(self, error=None) -> None:
        self.answer = threading.Event()
        self.asked = threading.Event()
        self.error = error
        self.calls = 0

    def getLibVersion(self):
        self.calls += 1
        self.asked.set()
        self.answer.wait(10)
        if self.error is not None:
            raise self.error
        return 9000000


class Holder:
    """Stands in for Connection.hold: hands out ``current``, or fails as
    hold does when there is none."""

    def __init__(self, current) -> None:
        self.current = current

    @contextlib.contextmanager
    def __call__(self):
        if self.current is None:
            raise HypervisorUnavailable("not connected to libvirt")
        yield self.current


@pytest.fixture
def probes(monkeypatch):
    """The probe threads StallWatch starts, joined after the test."""
    started: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(stall, "threading",
                        types.SimpleNamespace(Lock=threading.Lock, Thread=Recorded))
    yield started
    for thread in started:
        thread.join(5)
        assert not thread.is_alive()


def join(threads) -> None:
    for thread in threads:
        thread.join(5)


def test_the_limit_is_keepalive_interval_times_count_plus_one():
    assert StallWatch(5, 3, Holder(None)).limit == 20
    assert StallWatch(1, 1, Holder(None)).limit == 2


def test_one_probe_per_connection_until_it_returns(probes):
    conn = Conn()
    watch = StallWatch(5, 3, Holder(conn))
    try:
        assert watch.check(conn, 10.0) is None
        assert conn.asked.wait(5)
        assert watch.check(conn, 12.0) is None        # still running: no second one
        assert watch.check(conn, 19.0) is None
        assert len(probes) == 1
        assert probes[0].name == "libvirt-probe" and probes[0].daemon
        conn.answer.set()
        join(probes)
        assert watch.check(conn, 11.0) is None        # returned: may probe again
        assert len(probes) == 2
    finally:
        conn.answer.set()


def test_a_probe_stuck_on_a_replaced_connection_does_not_block_the_new_one(probes):
    old, new = Conn(), Conn()
    holder = Holder(old)
    watch = StallWatch(5, 3, holder)
    try:
        assert watch.check(old, 10.0) is None
        assert old.asked.wait(5)                      # stuck: libvirtd hung
        holder.current = new
        assert watch.check(new, 10.0) is None
        assert new.asked.wait(5)
        assert len(probes) == 2
    finally:
        old.answer.set()
        new.answer.set()


def test_at_the_limit_the_connection_is_lost_and_no_probe_starts(probes):
    conn = Conn()
    watch = StallWatch(1, 1, Holder(conn))
    assert watch.check(conn, 2.0) == "libvirtd answered no call for 2 s"
    assert watch.check(conn, 1.0) is None             # and none is marked running
    assert len(probes) == 1
    conn.answer.set()


def test_the_probe_asks_only_the_connection_it_was_started_for(probes):
    old, new = Conn(), Conn()
    watch = StallWatch(5, 3, Holder(new))             # replaced before the probe ran
    assert watch.check(old, 10.0) is None
    join(probes)
    assert (old.calls, new.calls) == (0, 0)
    assert watch.check(old, 10.0) is None             # it cleared its mark
    assert len(probes) == 2


def test_a_probe_failing_in_the_call_is_quiet_and_clears_its_mark(probes):
    conn = Conn(error=hv_recorded.libvirt_error(*hv_recorded.SOCKET_CLOSED))
    conn.answer.set()
    watch = StallWatch(5, 3, Holder(conn))
    assert watch.check(conn, 10.0) is None
    join(probes)
    assert watch.check(conn, 10.0) is None
    join(probes)
    assert conn.calls == 2


def test_a_probe_finding_no_connection_is_quiet_and_clears_its_mark(probes):
    conn = Conn()
    holder = Holder(None)                             # lost meanwhile
    watch = StallWatch(5, 3, holder)
    assert watch.check(conn, 10.0) is None
    join(probes)
    holder.current = conn
    conn.answer.set()
    assert watch.check(conn, 10.0) is None
    join(probes)
    assert conn.calls == 1
