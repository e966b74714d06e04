"""Delivery under faults, end to end: the real masakari-iim against the real
masakari-api and -engine of the testbed, with the faults made there (the
API stopped and started, a second episode within Masakari's duplicate
window, a host Masakari does not know, a recovery the engine ignores).

Where each notification stands is read from the monitor's own outbox
(read-only, beside the running monitor), and checked against what
Masakari holds. The byte-level faults (a trickling server, a huge body,
an HTML 200) need a server that misbehaves on purpose:
tests/unit/notifier/test_notifier_bounded.py.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from conftest import poll

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.notifier.base import parse_generated_time
from masakarimonitors_iim.outbox.store import OutboxEntry
from masakarimonitors_iim.outbox.store import OutboxStore

#: Masakari's duplicate_notification_detection_interval on the testbed
#: (its default) and the monitor's [callback] duplicate_window (default).
WINDOW = 180.0


def outbox_rows(mon: Any, uuid: str) -> list[OutboxEntry]:
    if not mon.journal_path.exists():
        return []
    with Database(str(mon.journal_path), read_only=True) as db:
        return [e for e in OutboxStore(db).rows() if e.notification.instance_uuid == uuid]


def wait_row(mon: Any, uuid: str, what: str, check: Any, timeout: float) -> OutboxEntry:
    def probe() -> OutboxEntry | None:
        assert mon.running, mon.log()[-3000:]
        rows = outbox_rows(mon, uuid)
        return rows[-1] if rows and check(rows[-1]) else None

    return poll(what, probe, timeout, interval=0.2)


def masakari(tb: Any, method: str, path: str, body: dict | None = None) -> Any:
    req = urllib.request.Request(
        tb.masakari_endpoint + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def test_api_back_delivers_within_retry_interval_not_at_the_back_off(e2e) -> None:
    """Masakari's API is stopped when the failure is detected, long enough
    for the back-off to grow past 20 s. Once it is back, the notification
    is delivered within retry_interval of its return (a cheap probe, not
    the next back-off attempt), under the uuid Masakari gave it, and
    followed to ``finished``."""
    tb = e2e.tb
    retry_interval = 2.0
    vm = e2e.guest("iim-dl-api-back")
    mon = e2e.monitor(options={"callback": {"retry_interval": "2", "max_retry_interval": "120"}})
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    e2e.stop_masakari_api()
    frozen_at = time.monotonic()
    tb.freeze_agent(vm.name)
    waiting = wait_row(
        mon,
        vm.uuid,
        "a back-off of more than 20 s",
        lambda r: r.status == "pending" and r.next_attempt_at - time.time() > 20,
        timeout=180,
    )
    attempts_down = waiting.attempts
    assert attempts_down <= 8, waiting  # back-off, not hammering

    e2e.start_masakari_api()
    back_at = time.time()
    row = wait_row(mon, vm.uuid, "delivered", lambda r: r.status == "delivered", timeout=60)
    e2e.timings["API back -> delivered"] = row.delivered_at - back_at
    assert row.delivered_at - back_at <= retry_interval + 3, (row, back_at)
    assert row.delivered_at < waiting.next_attempt_at - 10  # well before the back-off
    assert row.attempts == attempts_down + 1
    assert "Masakari answers again" in mon.log()

    note = e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)
    assert row.masakari_uuid == note["notification_uuid"]
    done = wait_row(
        mon, vm.uuid, "engine status finished", lambda r: r.engine_status == "finished", 60
    )
    assert done.engine_checked_at is not None


def test_second_episode_within_the_duplicate_window_is_resent_not_lost(e2e) -> None:
    """Episode 1 is delivered and recovered. The guest fails again within
    Masakari's 180 s window while the API is down, so episode 2's first
    attempt is refused and the next one gets a 409. The monitor asks
    Masakari, sees it holds only episode 1, keeps episode 2 pending (not
    "delivered"), and re-sends it re-stamped once episode 1's window is
    over: the VM is recovered a second time."""
    tb = e2e.tb
    vm = e2e.guest("iim-dl-second")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    tb.freeze_agent(vm.name)
    first = e2e.wait_recovered(mon, vm, pid_before=pid)
    first_at = parse_generated_time(first["generated_time"])
    assert first_at is not None
    tb.wait_agent(vm.name, timeout=e2e.BOOT_TIMEOUT)
    pid = tb.qemu_pid(vm.name)

    e2e.stop_masakari_api()
    tb.freeze_agent(vm.name)
    refused = wait_row(
        mon,
        vm.uuid,
        "episode 2 pending after a refused attempt",
        lambda r: r.episode == 2 and r.attempts >= 1,
        timeout=60,
    )
    assert refused.status == "pending"
    assert time.time() < first_at + WINDOW - 30, "too slow to be inside the window"
    e2e.start_masakari_api()

    collided = wait_row(
        mon, vm.uuid, "a 409 judged a collision", lambda r: "collided" in r.last_error, 60
    )
    assert collided.status == "pending", collided  # not taken as delivered
    assert first["notification_uuid"] in collided.last_error
    assert abs(collided.next_attempt_at - (first_at + WINDOW + 1)) < 1.0, collided
    assert [n["notification_uuid"] for n in e2e.notifications_for(vm)] == [
        first["notification_uuid"]
    ]
    assert "collided with notification %s" % first["notification_uuid"] in mon.log()

    delivered = wait_row(
        mon,
        vm.uuid,
        "episode 2 delivered after the window",
        lambda r: r.status == "delivered",
        timeout=first_at + WINDOW + 60 - time.time(),
    )
    assert delivered.delivered_at >= first_at + WINDOW
    # the window was waited out: one re-send, not one every retry_interval
    assert delivered.attempts == collided.attempts + 1, (collided, delivered)
    assert "collided again" not in mon.log()
    assert delivered.notification.generated_time != refused.notification.generated_time

    def second_finished() -> dict | None:
        notes = [
            n
            for n in e2e.notifications_for(vm)
            if n["notification_uuid"] != first["notification_uuid"]
        ]
        return notes[0] if notes and notes[0]["status"] == "finished" else None

    second = poll("episode 2 recovered by Masakari", second_finished, 120, interval=0.5)
    assert second["notification_uuid"] == delivered.masakari_uuid
    assert second["generated_time"] == delivered.notification.generated_time
    assert len(e2e.notifications_for(vm)) == 2
    assert e2e.nova_actions_for(vm) == [("stop", "202"), ("start", "202")] * 2
    poll("a new QEMU process", lambda: tb.qemu_pid(vm.name) not in (None, pid), 60)
    wait_row(mon, vm.uuid, "followed to finished", lambda r: r.engine_status == "finished", 60)


def test_unknown_host_is_kept_said_loudly_and_delivered_after_the_fix(e2e) -> None:
    """``[DEFAULT] hostname`` is not the name Masakari knows: 400 "Host
    with name ... could not be found". The notification is retried, not a
    dead letter; the log and status name [DEFAULT] hostname. The operator
    fixes the name and restarts: the very notification is delivered."""
    tb = e2e.tb
    vm = e2e.guest("iim-dl-badname")
    mon = e2e.monitor(options={"DEFAULT": {"hostname": "not-in-any-segment"}})
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    frozen_at = time.monotonic()
    tb.freeze_agent(vm.name)
    row = wait_row(mon, vm.uuid, "three refused attempts", lambda r: r.attempts >= 3, 90)
    assert row.status == "pending", row
    assert "does not know host 'not-in-any-segment'" in row.last_error
    assert "[DEFAULT] hostname" in row.last_error and "failover segment" in row.last_error
    loud = [
        line
        for line in mon.log().splitlines()
        if "ERROR" in line and "configuration is fixed" in line
    ]
    assert len(loud) == 1 and "not-in-any-segment" in loud[0], loud
    assert "[DEFAULT] hostname" in mon.status()
    assert e2e.notifications_for(vm) == []

    mon.stop()
    mon.write_config({"DEFAULT": {"hostname": tb.hostname}})
    mon.start()
    e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)
    (sent,) = outbox_rows(mon, vm.uuid)
    assert sent.notification.hostname == tb.hostname
    # the very notification queued under the wrong name, not a new one
    assert (sent.id, sent.notification.generated_time) == (
        row.id, row.notification.generated_time)
    assert "is sent as '%s'" % tb.hostname in mon.log()


def test_host_added_to_its_segment_later_gets_the_waiting_notification(e2e) -> None:
    """This host is not in a failover segment yet (removed here): the
    notification waits, loudly; once the operator adds the host, it is
    delivered at the next retry, without touching the monitor."""
    tb = e2e.tb
    segment = tb.segment_uuid
    vm = e2e.guest("iim-dl-nosegment")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    masakari(tb, "DELETE", f"/segments/{segment}/hosts/{tb.host_uuid}")
    try:
        frozen_at = time.monotonic()
        tb.freeze_agent(vm.name)
        row = wait_row(mon, vm.uuid, "two refused attempts", lambda r: r.attempts >= 2, 90)
        assert row.status == "pending" and "does not know host" in row.last_error, row
    finally:
        host = masakari(
            tb,
            "POST",
            f"/segments/{segment}/hosts",
            {"host": {"name": tb.hostname, "type": "COMPUTE", "control_attributes": "SSH"}},
        )["host"]
        tb.host_uuid = host["uuid"]  # the other tests check notifications against it
    e2e.wait_recovered(mon, vm, pid_before=pid, since=frozen_at)


def test_a_recovery_masakari_ignores_is_said_loudly(e2e) -> None:
    """The notification is delivered, but Masakari's engine ignores it (the
    instance is paused by then). The monitor follows it to ``ignored`` and,
    since the guest is still not healthy, says so: an ERROR in its log and
    in the outbox row that status shows, instead of a silent REPORTED."""
    tb = e2e.tb
    vm = e2e.guest("iim-dl-ignored")
    mon = e2e.monitor()
    e2e.wait_domain(mon, vm, journal="HEALTHY", verdict="HEALTHY")

    e2e.stop_masakari_api()
    tb.freeze_agent(vm.name)
    wait_row(mon, vm.uuid, "pending", lambda r: r.attempts >= 1, 60)
    tb.pause(vm.name)
    e2e.start_masakari_api()
    try:
        row = wait_row(
            mon, vm.uuid, "followed to ignored", lambda r: r.engine_status == "ignored", 120
        )
        (note,) = e2e.notifications_for(vm)
        assert (note["status"], note["notification_uuid"]) == ("ignored", row.masakari_uuid)
        assert row.status == "delivered"
        assert "NOT recovered" in row.last_error and "still failing" in row.last_error
        errors = [
            line for line in mon.log().splitlines() if "ERROR" in line and "NOT recovered" in line
        ]
        assert len(errors) == 1 and vm.uuid in errors[0] and row.masakari_uuid in errors[0]
        assert "NOT recovered" in mon.status()
        assert mon.status_report().domain(vm.uuid).journal == "REPORTED"
        assert e2e.nova_actions_for(vm) == []
    finally:
        tb.resume(vm.name)
