"""masakari-iim end to end: the real console script against real guests,
a real libvirtd and a real Masakari (API + engine), with the Nova stand-in
restarting what Masakari asks it to.

Every test asserts on what Masakari recorded (``tb.notifications()``), on
what the Nova stand-in was asked to do and on libvirt's view of the guest,
and reads the monitor through ``masakari-iim status`` as an operator would.
Each test has its own guests (Masakari drops the same payload from one host
within 180 s as a duplicate) and its own monitor (journal, log), stopped with
SIGTERM at teardown (the ``e2e`` fixture checks exit 0 within 5 s).
"""

from __future__ import annotations

import time


def test_frozen_agent_is_notified_once_and_recovered(e2e) -> None:
    """Guest agent frozen in a running guest -> one LIFECYCLE/STOPPED_FAILED
    notification, processed to ``finished``; the domain is stopped and
    started again and the monitor sees it healthy."""
    tb = e2e.tb
    vm = e2e.guest("iim-frozen-agent")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    frozen_at = time.monotonic()
    tb.freeze_agent(vm.name)
    assert tb.domain_state(vm.name) == "running"

    e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)
    log = mon.log()
    assert "failure episode 1 reported (guest agent did not answer in time" in log
    assert log.count("failure episode") == 1


def test_paused_guest_is_never_notified(e2e) -> None:
    """A paused domain's silence is UNKNOWN, not FAILED: no notification,
    however long it lasts; resumed, the guest is healthy again."""
    tb = e2e.tb
    vm = e2e.guest("iim-paused")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    tb.pause(vm.name)
    e2e.wait_domain(mon, vm, verdict="UNKNOWN", reason="domain is paused", timeout=30)
    e2e.quiet(e2e.DETECTION_WINDOW + e2e.MARGIN, vm)

    row = e2e.wait_domain(mon, vm, verdict="UNKNOWN", timeout=5)
    assert row.journal == "HEALTHY", row  # UNKNOWN moved nothing
    assert mon.status_report().outbox_for(vm.uuid) == []
    assert tb.domain_state(vm.name) == "paused"

    tb.resume(vm.name)
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", timeout=60)
    assert tb.qemu_pid(vm.name) == pid
    assert e2e.nova_actions_for(vm) == []
    e2e.assert_no_new_notifications()


def test_guest_without_agent_is_never_notified(e2e) -> None:
    """Two kinds of guest without a working agent, neither ever notified.

    * ``agent=False``: the domain has the agent channel but no qemu-ga runs
      in the guest. The monitor watches it (the channel is there) but it was
      never seen healthy, so it stays in DISCOVERY and is never reported.
    * no agent channel in the domain at all: listed UNMONITORED.
    """
    tb = e2e.tb
    no_ga = e2e.guest("iim-noagent", agent=False, wait_agent=False)
    no_channel = e2e.guest_without_agent_channel("iim-nochannel")
    pids = {g.name: tb.qemu_pid(g.name) for g in (no_ga, no_channel)}
    mon = e2e.monitor()

    row = e2e.wait_domain(mon, no_channel, journal="UNMONITORED", timeout=30)
    assert row.reason == "no guest agent channel"
    row = e2e.wait_domain(mon, no_ga, verdict="FAILED", reason="not connected", timeout=30)
    assert row.journal == "DISCOVERY", row

    e2e.quiet(e2e.DETECTION_WINDOW + e2e.MARGIN, no_ga, no_channel)

    status = mon.status_report()
    assert status.domain(no_ga.uuid).journal == "DISCOVERY", status.text
    assert status.domain(no_channel.uuid).journal == "UNMONITORED", status.text
    assert status.outbox == [], status.text
    for guest in (no_ga, no_channel):
        assert tb.domain_state(guest.name) == "running"
        assert tb.qemu_pid(guest.name) == pids[guest.name]
    assert "failure episode" not in mon.log()


def test_failure_that_ends_before_the_threshold_is_not_notified(e2e) -> None:
    """A heartbeat that stalls for a few rounds and comes back, with a
    failure threshold of 10 rounds: FAILING, then HEALTHY, no notification."""
    tb = e2e.tb
    vm = e2e.guest("iim-blip")
    threshold = 10
    mon = e2e.monitor(
        policy=f"""\
version: 1
rules:
  - name: blip
    match:
      domain_name: {vm.name}
    probes:
      - ping
      - name: heartbeat_file
        params:
          path: /run/app/heartbeat
          max_age: 2
    interval: 1
    timeout: 2
    failure_threshold: {threshold}
"""
    )
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="")
    pid = tb.qemu_pid(vm.name)

    tb.stop_heartbeat(vm.name)
    failing = e2e.wait_domain(mon, vm, journal="FAILING", timeout=30)
    assert failing.verdict == "FAILED" and "not updated" in failing.reason, failing
    tb.set_app_state(vm.name, "healthy")
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="", timeout=30)

    # Long enough for the threshold to have been reached had it relapsed.
    e2e.quiet(threshold * 1 + e2e.MARGIN, vm)
    row = mon.status_report().domain(vm.uuid)
    assert (row.journal, row.verdict) == ("HEALTHY", "HEALTHY"), row
    assert mon.status_report().outbox == []
    assert tb.qemu_pid(vm.name) == pid
    log = mon.log()
    assert "journal HEALTHY -> FAILING" in log and "journal FAILING -> HEALTHY" in log
    assert "failure episode" not in log


def test_sigkill_before_delivery_delivers_exactly_once(e2e) -> None:
    """Failure detected while Masakari's API is down, monitor killed with
    SIGKILL with the notification still in its outbox, API back, monitor
    restarted on the same journal: delivered exactly once."""
    tb = e2e.tb
    vm = e2e.guest("iim-sigkill")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    e2e.stop_masakari_api()
    frozen_at = time.monotonic()
    tb.freeze_agent(vm.name)
    pending = e2e.wait_outbox(mon, vm, "pending", min_attempts=1, timeout=60)
    assert pending.episode == 1, pending
    assert mon.status_report().domain(vm.uuid).journal == "REPORTED"

    mon.kill()
    assert not mon.running
    e2e.start_masakari_api()
    # Nobody can have delivered it: the only monitor is dead.
    assert e2e.notifications_for(vm) == []

    offset = mon.log_size()
    mon.start()
    assert "1 reported episodes, 1 notifications pending delivery" in mon.log()[offset:]

    e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)
    (row,) = mon.status_report().outbox_for(vm.uuid)
    assert row.attempts > pending.attempts
    assert row.generated == pending.generated  # the same notification, not a new one
    assert mon.log().count("failure episode") == 1


def test_masakari_api_down_for_minutes_delivers_exactly_once(e2e) -> None:
    """Masakari's API unreachable for two minutes after the failure was
    detected: the outbox keeps retrying (with back-off capped at 5 s) and
    says it is overdue, never drops it; once the API is back the
    notification lands exactly once and the VM is recovered."""
    tb = e2e.tb
    vm = e2e.guest("iim-api-down")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    e2e.stop_masakari_api()
    down_since = time.monotonic()
    tb.freeze_agent(vm.name)
    first = e2e.wait_outbox(mon, vm, "pending", min_attempts=1, timeout=60)

    down_for = 120.0
    while time.monotonic() - down_since < down_for:
        assert mon.running, mon.log()[-2000:]
        time.sleep(min(5.0, max(0.0, down_for - (time.monotonic() - down_since))))
    before_api = e2e.wait_outbox(mon, vm, "pending", min_attempts=10, timeout=5)
    assert before_api.generated == first.generated
    assert mon.status_report().domain(vm.uuid).journal == "REPORTED"
    # retry_max (12) attempts failed: said once, and it keeps going.
    assert "still undelivered after 12 attempts" in mon.log()

    e2e.start_masakari_api()
    e2e.wait_recovered(mon, vm, pid_before=pid, since=down_since)
    (row,) = mon.status_report().outbox_for(vm.uuid)
    assert row.attempts > before_api.attempts
    assert row.generated == first.generated


def test_libvirtd_restart_under_the_monitor(e2e) -> None:
    """libvirtd restarts while the monitor runs: it reconnects, no guest is
    notified, and a failure after that is still detected and notified once."""
    tb = e2e.tb
    vm = e2e.guest("iim-libvirtd")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    offset = mon.log_size()
    tb.restart_libvirtd()
    mon.wait_log("reconnected to libvirt", timeout=60, after=offset)
    assert "lost connection to libvirt" in mon.log()[offset:]
    assert tb.qemu_pid(vm.name) == pid

    e2e.quiet(e2e.DETECTION_WINDOW + e2e.MARGIN, vm)
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", timeout=30)
    assert mon.status_report().outbox == []
    assert mon.running

    frozen_at = time.monotonic()
    tb.freeze_agent(vm.name)
    e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)
