"""Issue 8's journal rows on the real testbed: a reboot into a boot whose
agent never comes up (seen and unseen by the monitor), a guest that never
had an agent, a spent restart budget and watch-only mode.

The hung boot is made with the guest init's ``ga_off`` kernel flag (the
flag ``create_guest(agent=False)`` uses): the domain's persistent
definition gets it, the domain is destroyed and started (it boots
without qemu-ga), and the definition is put back at once, so the boot
that Masakari's recovery starts is healthy again. Corroboration is off in
these policies: the activity guard has its own tests, and a guest busy
booting must not make these timings depend on it.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import libvirt

from tests.e2e.conftest import Guest, poll

#: Short enough for a quick test, longer than the agent disconnect grace
#: of the test monitor (10 s), during which a silent agent is UNKNOWN.
BOOT_DEADLINE = 20

POLICY = f"""\
version: 1
rules:
  - name: trust
    boot_deadline: {BOOT_DEADLINE}
    corroborate: false
"""


def _status_row(mon: Any, guest: Guest) -> dict[str, Any]:
    data = json.loads(mon.status("--json"))
    return next((d for d in data["domains"] if d["uuid"] == guest.uuid), {})


def _boot_without_agent(tb: Any, guest: Guest) -> None:
    """Destroy and start the domain into a boot whose qemu-ga never runs;
    its next boot (Masakari's recovery) is normal again."""
    conn = libvirt.open(tb.libvirt_uri)
    try:
        dom = conn.lookupByUUIDString(guest.uuid)
        good = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        bad = re.sub(r"<cmdline>(.*?)</cmdline>", r"<cmdline>\1 ga_off</cmdline>", good)
        assert bad != good and "ga_off" in bad
        conn.defineXML(bad)
        dom.destroy()
        dom.create()
        conn.defineXML(good)
    finally:
        conn.close()


def _assert_boot_report(e2e: Any, mon: Any, vm: Guest, hung_at: float) -> None:
    pid = e2e.tb.qemu_pid(vm.name)
    e2e.wait_recovered(mon, vm, pid_before=pid, since=hung_at)
    waited = e2e.timings[f"{e2e.test_name}: failure -> notification processed"]
    # reported past the deadline, not before, and well within it plus a
    # few rounds and the engine's work
    assert waited >= BOOT_DEADLINE - 1, waited
    log = mon.log()
    reported = [line for line in log.splitlines() if "failure episode" in line]
    assert len(reported) == 1, reported
    assert f"within {BOOT_DEADLINE} s of boot" in reported[0], reported[0]
    assert "it answered in an earlier boot" in reported[0], reported[0]


def test_a_reboot_into_a_hang_is_reported_once_within_the_deadline(e2e) -> None:
    vm = e2e.guest("iim-boot-hang")
    mon = e2e.monitor(policy=POLICY)
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")

    hung_at = time.monotonic()
    _boot_without_agent(e2e.tb, vm)
    row = poll("status shows the boot deadline",
               lambda: (r := _status_row(mon, vm)).get("boot", "").startswith(
                   "booting, deadline in") and r, 30)
    assert row["state"] == "DISCOVERY", row
    _assert_boot_report(e2e, mon, vm, hung_at)


def test_a_reboot_the_monitor_did_not_see_is_a_new_boot(e2e) -> None:
    vm = e2e.guest("iim-boot-unseen")
    mon = e2e.monitor(policy=POLICY)
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    assert mon.stop() == 0

    _boot_without_agent(e2e.tb, vm)      # while no monitor runs
    hung_at = time.monotonic()
    mon.start()
    assert "booted while it was not monitored" in poll(
        "the monitor notices the new boot", lambda: "booted while it was not monitored"
        in mon.log() and mon.log(), 30)
    _assert_boot_report(e2e, mon, vm, hung_at)


def test_a_guest_that_never_had_an_agent_is_never_reported(e2e) -> None:
    vm = e2e.guest("iim-boot-noagent", agent=False, wait_agent=False)
    mon = e2e.monitor(policy=POLICY)
    e2e.wait_domain(mon, vm, journal="DISCOVERY", verdict="FAILED", timeout=60)
    row = poll("status says it never came up",
               lambda: (r := _status_row(mon, vm)).get("boot", "").startswith(
                   "never came up") and r, BOOT_DEADLINE + 30)
    assert "never answered" in row["boot"], row
    e2e.quiet(e2e.DETECTION_WINDOW + e2e.MARGIN, vm)
    assert _status_row(mon, vm)["state"] == "DISCOVERY"
    assert mon.status_report().outbox_for(vm.uuid) == []


def test_a_spent_restart_budget_holds_the_next_episode(e2e) -> None:
    tb = e2e.tb
    vm = e2e.guest("iim-budget")
    mon = e2e.monitor(policy=POLICY + "    restart_budget: 1\n")
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)
    tb.freeze_agent(vm.name)
    e2e.wait_recovered(mon, vm, pid_before=pid)
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", timeout=60)

    tb.freeze_agent(vm.name)             # second episode: past the budget
    row = poll("status shows the report held",
               lambda: (r := _status_row(mon, vm)).get("held") and r, 60)
    assert row["state"] == "FAILING", row
    assert row["held"] == "restart budget spent: 1 notification in 24 h", row
    text = mon.status()
    assert "FAILING (held)" in text and "held: restart budget spent" in text
    time.sleep(e2e.DETECTION_WINDOW + e2e.MARGIN)
    assert len(e2e.notifications_for(vm)) == 1
    assert len(mon.status_report().outbox_for(vm.uuid)) == 1
    assert mon.log().count("held by guard budget") == 1


def test_observe_mode_judges_and_shows_but_never_notifies(e2e) -> None:
    tb = e2e.tb
    vm = e2e.guest("iim-observe")
    mon = e2e.monitor(policy=POLICY + "    action: observe\n")
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    tb.freeze_agent(vm.name)
    row = poll("status shows the would-be notification",
               lambda: (r := _status_row(mon, vm)).get("held") and r, 60)
    assert row["state"] == "FAILING", row
    assert row["held"].startswith("observe only: would have notified (guest agent"), row
    e2e.quiet(e2e.DETECTION_WINDOW + e2e.MARGIN, vm)
    assert mon.status_report().outbox_for(vm.uuid) == []
    assert tb.domain_state(vm.name) == "running"
    assert mon.log().count("held by guard observe") == 1
