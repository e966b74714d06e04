"""Application probes end to end: a policy file ([introspectiveinstancemonitor]
policy_file) chooses exec / heartbeat_file probes for one guest, and the
demo application inside it fails in ways guest-ping cannot see.

As in test_monitor_e2e.py, every test asserts on Masakari's notifications,
the Nova stand-in's actions and libvirt's view, with its own guest and its
own masakari-iim process.
"""

from __future__ import annotations

import base64
import json
import time

import libvirt
import libvirt_qemu

APP_HEALTH = "/usr/bin/app-health"


def kill_guest_agent(tb, name: str) -> None:
    """Kill qemu-ga for good in a running guest without guest-exec (which
    tb.freeze_agent needs): SysRq 'i' written through the agent's own file
    RPCs SIGKILLs every process but init, the loop that restarts qemu-ga
    included. The VM keeps running; libvirt then says the agent is not
    connected."""
    conn = libvirt.open(tb.libvirt_uri)
    try:
        dom = conn.lookupByName(name)

        def agent(command: str, arguments: dict) -> object:
            request = json.dumps({"execute": command, "arguments": arguments})
            return json.loads(libvirt_qemu.qemuAgentCommand(dom, request, 5, 0))["return"]

        handle = agent("guest-file-open", {"path": "/proc/sysrq-trigger", "mode": "w"})
        agent("guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(b"i").decode()})
        try:
            agent("guest-file-close", {"handle": handle})  # the flush kills the agent
        except libvirt.libvirtError:
            pass
    finally:
        conn.close()


def exec_policy(domain: str, *, ping: bool = True) -> str:
    probes = "      - ping\n" if ping else ""
    return f"""\
version: 1
rules:
  - name: demo-app
    match:
      domain_name: {domain}
    probes:
{probes}      - name: exec
        params:
          command: ["{APP_HEALTH}"]
          timeout: 2
    interval: 2
    timeout: 4
"""


def test_hung_application_is_notified_once(e2e) -> None:
    """The demo app hangs (SIGSTOP) while the guest agent still answers
    ping: the exec probe's health command does not finish in time, and
    after three such rounds one notification restarts the VM."""
    tb = e2e.tb
    vm = e2e.guest("iim-app-hang")
    mon = e2e.monitor(policy=exec_policy(vm.name))
    # reason "" : every probe, exec included, said HEALTHY.
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="")
    pid = tb.qemu_pid(vm.name)

    hung_at = time.monotonic()
    tb.set_app_state(vm.name, "hung")
    tb.wait_agent(vm.name, timeout=5)  # the agent still answers guest-ping

    e2e.wait_recovered(mon, vm, pid_before=pid, since=hung_at)
    # A new boot, a healthy app: the exec probe passes again.
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="", timeout=60)
    assert f"failure episode 1 reported (check command {APP_HEALTH} did not finish" in mon.log()
    assert len(e2e.new_notifications()) == 1


def test_stalled_heartbeat_is_notified_once(e2e) -> None:
    """The app keeps running (its health command still exits 0) but stops
    refreshing /run/app/heartbeat: after max_age and three failed rounds,
    one notification restarts the VM."""
    tb = e2e.tb
    vm = e2e.guest("iim-heartbeat")
    mon = e2e.monitor(
        policy=f"""\
version: 1
rules:
  - name: heartbeat
    match:
      domain_name: {vm.name}
    probes:
      - ping
      - name: heartbeat_file
        params:
          path: /run/app/heartbeat
          max_age: 3
    timeout: 2
"""
    )
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="")
    pid = tb.qemu_pid(vm.name)

    stalled_at = time.monotonic()
    tb.stop_heartbeat(vm.name)
    assert tb.guest_exec(vm.name, [APP_HEALTH])[0] == 0  # only the heartbeat stopped

    e2e.wait_recovered(mon, vm, pid_before=pid, since=stalled_at)
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="", timeout=60)
    assert "failure episode 1 reported (heartbeat /run/app/heartbeat not updated" in mon.log()
    assert len(e2e.new_notifications()) == 1


def test_blocked_guest_exec_is_unknown_never_notified(e2e) -> None:
    """qemu-ga blocks guest-exec: the exec probe says UNKNOWN with the reason
    in status and the guest is never notified for it. With ping added to its
    probes (policy reloaded with SIGHUP) the guest is HEALTHY, the blocked
    probe still explained, and a dead agent is still detected: one
    notification."""
    tb = e2e.tb
    vm = e2e.guest("iim-exec-blocked", blocked_rpcs=["guest-exec"])
    mon = e2e.monitor(policy=exec_policy(vm.name, ping=False))

    row = e2e.wait_domain(mon, vm, verdict="UNKNOWN", reason="guest-exec disabled", timeout=60)
    assert row.journal == "DISCOVERY", row
    assert "probe 'exec' cannot run" in row.reason, row
    e2e.quiet(2 * 3 + 4 + e2e.MARGIN, vm)  # interval 2 x threshold 3 + timeout 4
    row = mon.status_report().domain(vm.uuid)
    assert (row.journal, row.verdict) == ("DISCOVERY", "UNKNOWN"), row
    assert mon.status_report().outbox == []

    offset = mon.log_size()
    mon.write_policy(exec_policy(vm.name, ping=True))
    mon.reload()
    mon.wait_log("policy reloaded", timeout=30, after=offset)
    row = e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", timeout=60)
    assert "guest-exec disabled" in row.reason, row
    pid = tb.qemu_pid(vm.name)

    killed_at = time.monotonic()
    kill_guest_agent(tb, vm.name)
    assert tb.domain_state(vm.name) == "running"
    e2e.wait_recovered(mon, vm, pid_before=pid, since=killed_at)
    assert "failure episode 1 reported (guest agent is not connected" in mon.log()
    # Rebooted with the same qemu-ga policy: healthy by ping, exec still explained.
    row = mon.status_report().domain(vm.uuid)
    assert "guest-exec disabled" in row.reason, row


def test_verbose_healthy_check_is_not_notified(e2e) -> None:
    """A check that exits 0 and prints OK but writes 900 KB to stderr
    (base64 of '?' bytes, so the reply is full of '/' a JSON writer may
    escape): its guest-exec-status reply is over the monitor's 1 MiB reply
    limit, yet it is read for its exit code and first bytes. The guest
    stays HEALTHY round after round and Masakari hears nothing."""
    vm = e2e.guest("iim-exec-verbose")
    command = json.dumps(["/bin/sh", "-c",
                          "head -c 900000 /dev/zero | tr '\\0' '?' >&2; echo OK"])
    mon = e2e.monitor(
        policy=f"""\
version: 1
rules:
  - name: verbose-check
    match:
      domain_name: {vm.name}
    probes:
      - name: exec
        params:
          command: {command}
          stdout_regex: "^OK$"
          timeout: 8
    interval: 2
    timeout: 10
"""
    )
    # The check really does write more than the limit allows (1.2 MB of
    # base64 on stderr alone).
    code, out, err = e2e.tb.guest_exec(vm.name, json.loads(command))
    assert code == 0 and len(err) >= 900_000, (code, len(err))

    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY", reason="", timeout=60)
    e2e.quiet(2 * 3 + 10 + e2e.MARGIN, vm)  # interval 2 x threshold 3 + timeout 10
    row = mon.status_report().domain(vm.uuid)
    assert (row.journal, row.verdict, row.reason) == ("HEALTHY", "HEALTHY", ""), row
    assert "exceeds the" not in mon.log() and "over the size limit" not in mon.log()
    assert e2e.notifications_for(vm) == []
