"""Guest states that must not be taken for failures, on the real testbed.

* Filesystems frozen with qemu-ga's fsfreeze (what a quiesced snapshot
  does) while an exec probe is on: every probe UNKNOWN with the freeze as
  the reason, never "blocked by qemu-ga policy", no notification; the
  probes run again after the thaw.
* The agent frozen while the guest keeps writing to its disk: FAILING but
  held ("agent failed, guest active"), no notification while the I/O goes
  on; once the I/O stops, reported exactly once.

Guests get a small ext4 data disk (``disk=True``): qemu-ga's fsfreeze
does nothing without a real filesystem, and libvirt counts block I/O only
on disks.
"""

from __future__ import annotations

import json
import time

from conftest import poll

EXEC_POLICY = """\
version: 1
rules:
  - name: app
    match:
      domain_name: {name}
    probes:
      - ping
      - name: exec
        params:
          command: [/usr/bin/app-health]
          timeout: 2
    interval: 1
    timeout: 3
    failure_threshold: 3
"""

#: Seconds of disk I/O the guest does while its agent is frozen, and the
#: activity window the monitor looks back over (short, for the test).
IO_SECONDS = 40
ACTIVITY_WINDOW = 10


def domain_json(mon, uuid: str) -> dict:
    data = json.loads(mon.status("--json"))
    (row,) = [d for d in data["domains"] if d["uuid"] == uuid]
    return row


def test_fsfreeze_with_exec_probe_is_unknown_and_probes_return_after_thaw(e2e) -> None:
    tb = e2e.tb
    vm = e2e.guest("iim-fsfreeze", disk=True)
    mon = e2e.monitor(policy=EXEC_POLICY.format(name=vm.name))
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="")
    pid = tb.qemu_pid(vm.name)

    assert tb.agent_command(vm.name, "guest-fsfreeze-freeze") >= 1
    try:
        row = e2e.wait_domain(mon, vm, verdict="UNKNOWN",
                              reason="guest filesystems are frozen (fsfreeze) since", timeout=30)
        # Frozen is not a qemu-ga policy: nothing tells the operator to fix it.
        assert "qemu-ga" not in row.reason and "blocked" not in row.reason, row
        # Each probe's own verdict (status file, written every few seconds).
        poll("ping and exec both UNKNOWN while frozen", lambda: [
            (p["name"], p["verdict"]) for p in domain_json(mon, vm.uuid)["probes"]] == [
            ("ping", "UNKNOWN"), ("exec", "UNKNOWN")], 60)
        # Several detection windows frozen: no report, the journal unmoved.
        e2e.quiet(3 * e2e.DETECTION_WINDOW + e2e.MARGIN, vm)
        row = e2e.wait_domain(mon, vm, verdict="UNKNOWN", reason="fsfreeze", timeout=5)
        assert row.journal == "HEALTHY", row
    finally:
        tb.agent_command(vm.name, "guest-fsfreeze-thaw")

    # After the thaw the exec probe runs again: HEALTHY from both probes,
    # not "ping HEALTHY, exec blocked".
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="", timeout=30)

    def both_probes_ran() -> bool:
        probes = domain_json(mon, vm.uuid)["probes"]
        return [(p["name"], p["verdict"], p["skipped"]) for p in probes] == [
            ("ping", "HEALTHY", False), ("exec", "HEALTHY", False)]

    poll("ping and exec both HEALTHY after the thaw", both_probes_ran, 60)
    assert "cannot run" not in domain_json(mon, vm.uuid)["note"]
    assert tb.qemu_pid(vm.name) == pid
    assert e2e.nova_actions_for(vm) == []
    e2e.assert_no_new_notifications()


def test_agent_frozen_while_guest_writes_is_held_then_reported_once(e2e) -> None:
    tb = e2e.tb
    vm = e2e.guest("iim-busy-io", disk=True)
    mon = e2e.monitor(options={"introspectiveinstancemonitor": {
        "activity_window": str(ACTIVITY_WINDOW)}})
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    # A bounded I/O loop, detached from qemu-ga, which is frozen next.
    loop = (f"end=$(( $(date +%s) + {IO_SECONDS} )); "
            "while [ $(date +%s) -lt $end ]; do "
            "dd if=/dev/zero of=/data/io bs=256k count=4 conv=fsync 2>/dev/null; "
            "sleep 0.5; done")
    tb.agent_command(vm.name, "guest-exec", {
        "path": "/bin/sh", "arg": ["-c", f"({loop}) </dev/null >/dev/null 2>&1 &"]})
    io_started = time.monotonic()
    tb.freeze_agent(vm.name)
    frozen_at = time.monotonic()

    def held() -> dict | None:
        row = domain_json(mon, vm.uuid)
        return row if row["held"].startswith("agent failed, guest active") else None

    row = poll("report held as agent failed, guest active", held, 30)
    assert row["state"] == "FAILING" and row["verdict"] == "FAILED", row
    assert "agent failed, guest active" in mon.status()      # the text table too
    # Nothing reaches Masakari while the guest writes.
    e2e.quiet(max(0.0, io_started + IO_SECONDS - time.monotonic()), vm)
    assert domain_json(mon, vm.uuid)["state"] == "FAILING"

    # The I/O has stopped: reported once the window sees none.
    e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)
    log = mon.log()
    assert "held by guard activity: agent failed, guest active" in log
    assert log.count("failure episode") == 1
