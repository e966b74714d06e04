"""The testbed itself works: guests, their agent, the demo app, masakari recovery.

These tests prove the world the monitor's e2e tests run in. Agent checks go
through libvirt-python, as the monitor does, not only through the testbed's
own virsh-based helpers.
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.error
import urllib.request
import uuid as uuidlib
import xml.etree.ElementTree as ET

import libvirt
import libvirt_qemu
import pytest
from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
from openstack import connection
from testbed import GuestAgentError, Testbed

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"


def agent_command(tb: Testbed, name: str, command: str, timeout: int = 5) -> dict:
    conn = libvirt.open(tb.libvirt_uri)
    try:
        dom = conn.lookupByName(name)
        return json.loads(
            libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": command}), timeout, 0)
        )
    finally:
        conn.close()


def wait_until(what: str, predicate, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def heartbeat_age(tb: Testbed, name: str) -> int:
    """Seconds since the demo app last wrote its heartbeat, by the guest's clock."""
    code, out, err = tb.guest_exec(name, ["/bin/sh", "-c", "cat /run/app/heartbeat; date +%s"])
    assert code == 0, err
    beat, now = (int(v) for v in out.split())
    return now - beat


def test_guest_boots_and_answers_ping_through_libvirt(testbed: Testbed, timings: dict) -> None:
    dom_uuid = testbed.create_guest("boot", nova_metadata={"flavor_name": "m1.iim"})
    started = time.monotonic()
    testbed.wait_agent("boot")
    timings["guest boot to first ping"] = time.monotonic() - started

    assert agent_command(testbed, "boot", "guest-ping") == {"return": {}}
    assert testbed.domain_state("boot") == "running"

    conn = libvirt.open(testbed.libvirt_uri)
    try:
        dom = conn.lookupByUUIDString(dom_uuid)
        domain = ET.fromstring(dom.XMLDesc())
        # metadata() hands the element back without its namespace.
        element = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NOVA_NS))
    finally:
        conn.close()
    ns = {"nova": NOVA_NS}
    meta = domain.find("metadata/nova:instance", ns)
    assert meta is not None
    assert meta.findtext("nova:name", namespaces=ns) == "boot"
    assert meta.find("nova:flavor[@name='m1.iim']", ns) is not None
    assert meta.find("nova:root[@type='image']", ns) is not None
    assert meta.findtext("nova:owner/nova:project", namespaces=ns) == "demo"
    assert element.findtext("name") == "boot"


def test_guest_without_agent_has_no_agent(testbed: Testbed) -> None:
    testbed.create_guest("noagent", agent=False)
    wait_until("guest init to finish", lambda: "init: ready" in testbed.console_log("noagent"), 60)
    assert "qemu-ga disabled" in testbed.console_log("noagent")

    with pytest.raises(libvirt.libvirtError) as excinfo:
        agent_command(testbed, "noagent", "guest-ping")
    assert excinfo.value.get_error_code() == libvirt.VIR_ERR_AGENT_UNRESPONSIVE
    assert "not connected" in str(excinfo.value)
    assert testbed.domain_state("noagent") == "running"


def test_blocked_rpc_is_disabled_in_guest_info(testbed: Testbed) -> None:
    testbed.create_guest("blocked", blocked_rpcs=["guest-exec"])
    testbed.wait_agent("blocked")

    commands = {
        c["name"]: c["enabled"]
        for c in agent_command(testbed, "blocked", "guest-info")["return"]["supported_commands"]
    }
    assert commands["guest-exec"] is False
    assert commands["guest-ping"] is True
    with pytest.raises(GuestAgentError, match="guest-exec has been disabled"):
        testbed.guest_exec("blocked", ["/bin/true"])


def test_demo_app_health_and_heartbeat_follow_state(testbed: Testbed) -> None:
    testbed.create_guest("app")
    testbed.wait_agent("app")
    health = ["/usr/bin/app-health"]

    # healthy: health exits 0, heartbeat fresh
    assert testbed.app_state("app") == "healthy"
    assert testbed.guest_exec("app", health)[0] == 0
    assert heartbeat_age(testbed, "app") <= 2

    # heartbeat stopped: still healthy, heartbeat goes stale
    testbed.stop_heartbeat("app")
    assert testbed.guest_exec("app", health)[0] == 0
    wait_until("stale heartbeat", lambda: heartbeat_age(testbed, "app") >= 3, 10)

    # healthy again (also resumes the heartbeat)
    testbed.set_app_state("app", "healthy")
    wait_until("fresh heartbeat", lambda: heartbeat_age(testbed, "app") <= 2, 10)

    # hung: health blocks, heartbeat goes stale
    testbed.set_app_state("app", "hung")
    assert testbed.app_state("app") == "hung"
    with pytest.raises(TimeoutError):
        testbed.guest_exec("app", health, timeout=3)
    wait_until("stale heartbeat", lambda: heartbeat_age(testbed, "app") >= 3, 10)

    # exited: health exits non-zero, heartbeat stays stale
    testbed.set_app_state("app", "exited")
    assert testbed.app_state("app") == "exited"
    code, out, _ = testbed.guest_exec("app", health)
    assert code != 0 and "not running" in out
    assert heartbeat_age(testbed, "app") >= 3

    # and back
    testbed.set_app_state("app", "healthy")
    assert testbed.guest_exec("app", health)[0] == 0
    wait_until("fresh heartbeat", lambda: heartbeat_age(testbed, "app") <= 2, 10)


def test_frozen_agent_times_out_while_vm_runs(testbed: Testbed) -> None:
    testbed.create_guest("frozen")
    testbed.wait_agent("frozen")
    testbed.freeze_agent("frozen")

    with pytest.raises(libvirt.libvirtError) as excinfo:
        agent_command(testbed, "frozen", "guest-ping", timeout=2)
    assert excinfo.value.get_error_code() == libvirt.VIR_ERR_AGENT_UNRESPONSIVE
    assert testbed.domain_state("frozen") == "running"


def test_pause_resume_destroy_start(testbed: Testbed) -> None:
    testbed.create_guest("life")
    testbed.wait_agent("life")
    testbed.pause("life")
    assert testbed.domain_state("life") == "paused"
    testbed.resume("life")
    assert testbed.domain_state("life") == "running"
    testbed.destroy("life")
    assert testbed.domain_state("life") == "shut-off"
    assert testbed.qemu_pid("life") is None
    testbed.start_guest("life")
    testbed.wait_agent("life")


def test_guests_survive_libvirtd_restart(testbed: Testbed) -> None:
    testbed.create_guest("survivor")
    testbed.wait_agent("survivor")
    pid = testbed.qemu_pid("survivor")
    assert pid is not None

    testbed.restart_libvirtd()

    assert testbed.qemu_pid("survivor") == pid
    assert testbed.domain_state("survivor") == "running"
    testbed.wait_agent("survivor", timeout=15)


def test_masakari_api_stops_and_starts(testbed: Testbed) -> None:
    testbed.stop_masakari_api()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(testbed.masakari_endpoint + "/segments", timeout=5)
    testbed.start_masakari_api()
    with urllib.request.urlopen(testbed.masakari_endpoint + "/segments", timeout=5) as resp:
        segments = json.load(resp)["segments"]
    assert [s["uuid"] for s in segments] == [testbed.segment_uuid]


def test_vm_notification_is_recovered_through_nova_standin(testbed: Testbed, timings: dict) -> None:
    dom_uuid = testbed.create_guest("recover")
    testbed.wait_agent("recover")
    pid_before = testbed.qemu_pid("recover")

    ha = connection.Connection(
        session=ks_session.Session(auth=noauth.NoAuth()),
        instance_ha_endpoint_override=testbed.masakari_endpoint,
    ).instance_ha
    posted = time.monotonic()
    notification = ha.create_notification(
        type="VM",
        hostname=testbed.hostname,
        generated_time=datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%f"
        ),
        payload={
            "event": "LIFECYCLE",
            "instance_uuid": dom_uuid,
            "vir_domain_event": "STOPPED_FAILED",
        },
    )

    def status() -> str:
        (found,) = [
            n
            for n in testbed.notifications()
            if n["notification_uuid"] == notification.notification_uuid
        ]
        return found["status"]

    wait_until("notification processed", lambda: status() not in ("new", "running"), 90)
    timings["notification POST to finished"] = time.monotonic() - posted
    assert status() == "finished"

    actions = [
        (a["action"], a["result"]) for a in testbed.nova_actions() if a["server"] == dom_uuid
    ]
    assert actions == [("stop", "202"), ("start", "202")]

    pid_after = testbed.qemu_pid("recover")
    assert pid_after is not None and pid_after != pid_before
    assert testbed.domain_state("recover") == "running"
    testbed.wait_agent("recover")


def test_unknown_instance_notification_fails_recovery(testbed: Testbed) -> None:
    """The stand-in does not invent servers: an unknown UUID is a 404 to masakari."""
    body = {
        "notification": {
            "type": "VM",
            "hostname": testbed.hostname,
            "generated_time": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%f"
            ),
            "payload": {
                "event": "LIFECYCLE",
                "instance_uuid": str(uuidlib.uuid4()),
                "vir_domain_event": "STOPPED_FAILED",
            },
        }
    }
    req = urllib.request.Request(
        testbed.masakari_endpoint + "/notifications",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        created = json.load(resp)["notification"]

    def status() -> str:
        (found,) = [
            n
            for n in testbed.notifications()
            if n["notification_uuid"] == created["notification_uuid"]
        ]
        return found["status"]

    wait_until("notification processed", lambda: status() not in ("new", "running"), 60)
    assert status() == "error"
