"""The journal and the daemon under faults, end to end (doc/source/faults.rst).

libvirtd is hung with SIGSTOP (not killed: its socket still accepts
connections, and every call on it simply never returns) and continued
with SIGCONT, as a wedged or swapped-out daemon behaves; a probe searches
guest output with a pattern that backtracks for ever in Python's ``re``.
Each test checks that SIGTERM still stops the monitor within 5 s, and
that nothing is counted or notified that the guest did not deserve.

The rows that need no guest (a second monitor on one journal, hostile
policy files, Masakari trickling its answer) are in
tests/functional/test_faults.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

#: The monitor's stall limit (keepalive_interval x (keepalive_count + 1)):
#: a call unanswered this long, with no other call answered meanwhile,
#: marks the connection lost, so a hung libvirtd is noticed within ~20 s.
KEEPALIVE_DEAD_AFTER = 5 * (3 + 1)


@contextlib.contextmanager
def libvirtd_stopped(tb) -> Iterator[int]:
    """libvirtd SIGSTOPped for the block; always continued afterwards, or
    the testbed could not even be torn down."""
    pid = tb.status()["daemons"]["libvirtd"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def lines_with(text: str, words: str) -> list[str]:
    return [line for line in text.splitlines() if words in line]


def test_libvirtd_hangs_then_comes_back(e2e) -> None:
    """While libvirtd hangs: no verdict counts, no notification, and one
    log line for each change of state. Once it answers again, a frozen
    agent is detected within the usual detection window and recovered."""
    tb = e2e.tb
    vm = e2e.guest("iim-hung-libvirtd")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    offset = mon.log_size()
    with libvirtd_stopped(tb):
        hung_at = time.monotonic()
        mon.wait_log("lost connection to libvirt", timeout=KEEPALIVE_DEAD_AFTER + 20,
                     after=offset)
        e2e.timings["libvirtd hung -> connection declared lost"] = time.monotonic() - hung_at
        row = e2e.wait_domain(mon, vm, verdict="UNKNOWN", timeout=30)
        assert "libvirt" in row.reason, row
        # Hung for a while longer: still nothing counted or sent.
        e2e.quiet(e2e.DETECTION_WINDOW + e2e.MARGIN, vm)
        row = mon.status_report().domain(vm.uuid)
        assert (row.journal, row.verdict) == ("HEALTHY", "UNKNOWN"), row
        assert mon.running
    mon.wait_log("reconnected to libvirt", timeout=60, after=offset)
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", timeout=30)
    assert tb.qemu_pid(vm.name) == pid

    during = mon.log()[offset:]
    assert len(lines_with(during, "lost connection to libvirt")) == 1, during
    assert len(lines_with(during, "reconnected to libvirt")) == 1, during
    assert len(lines_with(during, "cannot list domains")) <= 1, during
    assert len(lines_with(during, "%s (%s): UNKNOWN" % (vm.name, vm.uuid))) == 1, during
    assert "-> FAILING" not in during and "failure episode" not in during
    assert "Traceback" not in during
    e2e.assert_no_new_notifications()
    assert mon.status_report().outbox == []

    offset = mon.log_size()
    frozen_at = time.monotonic()
    tb.freeze_agent(vm.name)
    mon.wait_log("failure episode 1 reported", timeout=e2e.DETECTION_WINDOW + e2e.MARGIN,
                 after=offset)
    e2e.timings["after the hang: agent frozen -> reported"] = time.monotonic() - frozen_at
    e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)


@pytest.mark.parametrize(
    "hung_for",
    [3.0, KEEPALIVE_DEAD_AFTER + 10.0],
    ids=["calls-blocked", "reconnect-blocked"],
)
def test_sigterm_within_five_seconds_while_libvirtd_hangs(e2e, hung_for) -> None:
    """Calls blocked on the hung daemon (before keepalive gives up), then
    the reconnect blocked in libvirt's handshake (after): SIGTERM stops
    the monitor within 5 s either way, with exit 0."""
    tb = e2e.tb
    vm = e2e.guest(f"iim-sigterm-hung-{int(hung_for)}")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    offset = mon.log_size()
    with libvirtd_stopped(tb):
        time.sleep(hung_for)
        if hung_for > KEEPALIVE_DEAD_AFTER:
            assert "lost connection to libvirt" in mon.log()[offset:]
        assert mon.running
        code = mon.stop(timeout=15)
        seconds = mon.last_stop_seconds
    e2e.timings[f"SIGTERM with libvirtd hung {hung_for:.0f}s"] = seconds
    assert code == 0, mon.log()[-3000:]
    assert seconds < 5.0, f"stopped after {seconds:.1f}s"
    assert "stopped" in mon.log()[offset:]
    e2e.assert_no_new_notifications()


def test_sigterm_within_five_seconds_while_a_probe_judges_a_pathological_regex(e2e) -> None:
    """^(a+)+$ against 40 a's and a '!': Python's re would backtrack for
    days holding the GIL (27 bytes already cost 16 s), so no signal
    handler could run. Judged with RE2, the verdict comes at once, every
    round, and SIGTERM is as quick as ever."""
    vm = e2e.guest("iim-regex")
    output = "a" * 40 + "!"
    mon = e2e.monitor(
        policy=f"""\
version: 1
rules:
  - name: regex
    match:
      domain_name: {vm.name}
    probes:
      - name: exec
        params:
          command: ["/bin/sh", "-c", "echo {output}"]
          stdout_regex: "^(a+)+$"
    interval: 1
    timeout: 2
    failure_threshold: 100
"""
    )
    e2e.wait_domain(mon, vm, verdict="FAILED", reason="does not match", timeout=60)
    offset = mon.log_size()
    time.sleep(3)  # more rounds, each judging the output again
    assert mon.running
    code = mon.stop(timeout=15)
    e2e.timings["SIGTERM with the regex probe running"] = mon.last_stop_seconds
    assert code == 0 and mon.last_stop_seconds < 5.0, mon.last_stop_seconds
    assert "Traceback" not in mon.log()[offset:]
    e2e.assert_no_new_notifications()
