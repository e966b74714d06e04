"""The main job, end to end, for a newcomer: ``make demo``.

Starts the testbed (a private libvirtd with two tiny QEMU guests running
qemu-ga and a demo application, a local Masakari API and engine, and a
stand-in for Nova), runs ``masakari-iim`` against it, makes the application
inside one guest hang while its kernel and guest agent still answer, and
prints what happens in plain words: the failure seen, the notification in
Masakari, the instance restarted, the guest healthy again. Everything is
torn down at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from testbed import Testbed
from testbed.monitor_process import MonitorProcess, parse_status

POLICY = """\
version: 1
rules:
  - name: demo-app
    match:
      instance_name: "web-*"
    probes:
      - ping
      - name: exec
        params:
          command: ["/usr/bin/app-health"]
          timeout: 2
"""

T0 = time.monotonic()


def say(text: str) -> None:
    print("[%6.1fs] %s" % (time.monotonic() - T0, text), flush=True)


def wait(what: str, predicate: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError("gave up after %ds waiting for %s" % (timeout, what))


def journal_state(monitor: MonitorProcess, uuid: str) -> str:
    row = parse_status(monitor.status("--json")).domains.get(uuid)
    return row.journal if row else ""


def follow_journal(monitor: MonitorProcess, uuid: str, target: str,
                   words: dict[str, str], timeout: float) -> None:
    """Print each journal state the domain passes through, up to ``target``."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = journal_state(monitor, uuid)
        if state != seen and state in words:
            say(words[state])
        seen = state
        if state == target:
            return
        time.sleep(0.3)
    raise TimeoutError("gave up after %ds waiting for journal state %s" % (timeout, target))


def run(workdir: Path) -> None:
    tb = Testbed(workdir / "testbed", hostname="demo-compute-1")
    say("installing what is missing (first run: a few minutes; later: seconds)")
    tb.setup()
    tb.start()
    say("testbed up: private libvirtd at %s" % tb.libvirt_uri)
    say("            Masakari API at %s (segment with host %s), engine, RabbitMQ,"
        % (tb.masakari_endpoint, tb.hostname))
    say("            and a STAND-IN FOR NOVA that maps server stop/start to libvirt")
    try:
        web = tb.create_guest("web-1", nova_metadata={"name": "web-1", "flavor_name": "m1.tiny"})
        db = tb.create_guest("db-1", nova_metadata={"name": "db-1", "flavor_name": "m1.tiny"})
        tb.wait_agent("web-1", timeout=120)
        tb.wait_agent("db-1", timeout=120)
        say("two guests booted, their guest agents answer: web-1 (%s), db-1 (%s)" % (web, db))

        policy = workdir / "iim-policy.yaml"
        policy.write_text(POLICY)
        monitor = MonitorProcess(tb, workdir / "monitor", {
            "introspectiveinstancemonitor": {"policy_file": str(policy),
                                             "guest_monitoring_interval": "2",
                                             "guest_monitoring_timeout": "3"}})
        monitor.start()
        say("masakari-iim started: every 2 s it pings both guests; on web-1 it also runs")
        say("    /usr/bin/app-health inside the guest (policy rule 'demo-app'); 3 failed")
        say("    rounds in a row make one notification")
        wait("both guests healthy", lambda: journal_state(monitor, web) == "HEALTHY"
             and journal_state(monitor, db) == "HEALTHY", 60)
        say("both guests are HEALTHY in the monitor's journal")
        pid_before = tb.qemu_pid("web-1")

        tb.set_app_state("web-1", "hung")
        say("the application in web-1 now hangs (SIGSTOP inside the guest); the guest")
        say("    kernel and its agent still answer ping, so QEMU and libvirt see nothing")
        follow_journal(monitor, web, "REPORTED", {
            "FAILING": "masakari-iim: web-1's health command did not answer: FAILING",
            "REPORTED": "masakari-iim: threshold reached, failure episode REPORTED; "
                        "notification queued"}, 90)

        def arrived() -> list[dict]:
            return [n for n in tb.notifications()
                    if n.get("payload", {}).get("instance_uuid") == web]
        notes = wait("the notification in Masakari", arrived, 60)
        note = notes[0]
        say("Masakari received notification %s: type VM, payload %s"
            % (note["notification_uuid"], note["payload"]))
        finished = wait("the engine to finish", lambda: [
            n for n in arrived() if n["status"] in ("finished", "failed", "error", "ignored")],
            120)
        say("masakari-engine processed it: status %s" % finished[0]["status"])
        actions = [a["action"] for a in tb.nova_actions() if a.get("server") == web]
        say("the Nova stand-in was asked to: %s" % ", ".join(actions))
        wait("web-1 to run again", lambda: tb.qemu_pid("web-1") not in (None, pid_before), 60)
        say("web-1 runs again as a new QEMU process (pid %s, was %s)"
            % (tb.qemu_pid("web-1"), pid_before))
        wait("web-1 healthy again", lambda: journal_state(monitor, web) == "HEALTHY", 120)
        say("masakari-iim: web-1 is HEALTHY again; episode closed")
        others = [n for n in tb.notifications()
                  if n.get("payload", {}).get("instance_uuid") == db]
        say("db-1 was never touched: %d notifications for it" % len(others))
        say("what the operator sees (masakari-iim status):")
        for line in monitor.status().splitlines():
            print("          " + line)
        code = monitor.stop()
        say("masakari-iim stopped with SIGTERM (exit code %s)" % code)
    finally:
        tb.stop()
        say("testbed torn down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs) after the demo")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="iim-demo-"))
    try:
        run(workdir)
    except Exception as exc:
        say("demo failed: %s" % exc)
        say("logs kept in %s" % workdir)
        return 1
    if args.keep:
        say("logs kept in %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print("""
To point masakari-iim at a real cloud instead, on each compute host:
  pip install .   (needs Debian's libvirt-dev and pkg-config)
  and in /etc/masakarimonitors/masakarimonitors.conf:
    [DEFAULT]
    hostname = <this host's name in the Masakari segment>
    [libvirt]
    connection_uri = qemu:///system
    [api]
    auth_type = password
    auth_url = https://keystone.example.net/v3
    username = masakari
    password = ...
    project_name = service
    user_domain_id = default
    project_domain_id = default
    region = RegionOne
  then run: masakari-iim   (and masakari-iim status to see what it does)
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
