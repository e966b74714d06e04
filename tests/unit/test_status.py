"""``masakari-iim status``: the view built from the journal, the outbox and
the monitor's snapshot, its text and JSON renderings, and reading the
journal without writing to it."""
from __future__ import annotations

import json
import os
import re
import sqlite3

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox.store import OutboxEntry, OutboxStore
from masakarimonitors_iim.status import model
from masakarimonitors_iim.status import render_json
from masakarimonitors_iim.status import render_text
from masakarimonitors_iim.status import snapshot as snapshot_mod
from masakarimonitors_iim.verdict import Verdict
from tests.unit.outbox.helpers import save

NOW = 1_700_000_000.0
U1 = "11111111-0000-0000-0000-000000000001"
U2 = "11111111-0000-0000-0000-000000000002"
U3 = "11111111-0000-0000-0000-000000000003"
U4 = "11111111-0000-0000-0000-000000000004"
PATH = "/var/lib/masakarimonitors/iim-journal.sqlite"


def record(uuid, name, state=State.HEALTHY, since=NOW - 3600, failures=0,
           verdict=Verdict.HEALTHY, reason="", episode=0):
    return machine.Record(uuid=uuid, name=name, state=state, failures=failures,
                          episode=episode, last_verdict=verdict, last_reason=reason,
                          since=since, seen_healthy=True, updated_at=since)


def probe(name, verdict="HEALTHY", reason="", seconds=0.003, skipped=False, at=NOW - 4):
    return {"name": name, "verdict": verdict, "reason": reason, "seconds": seconds,
            "skipped": skipped, "at": at}


def snap(monitored=None, unmonitored=None, unmonitored_names=None, written_at=NOW - 3):
    return {"host": "compute-1", "written_at": written_at,
            "monitored": monitored or {}, "unmonitored": unmonitored or {},
            "unmonitored_names": unmonitored_names or {}}


def live(name, display_name="", probes=(), capability="", startup=None, disconnect=None):
    return {"name": name, "display_name": display_name, "capability": capability,
            "probes": list(probes), "startup_grace_until": startup,
            "disconnect_grace_until": disconnect}


def entry(id, uuid, episode=1, status="pending", attempts=0, last_error="",
          delivered_at=None, next_attempt_at=NOW + 30, **masakari):
    """An outbox row as the store returns it (a real database round trip
    would only add noise to a table of views)."""
    n = make_notification(uuid, "compute-1", NOW - 600)
    return OutboxEntry(id=id, notification=n, episode=episode, reason="agent timeout",
                       status=status, attempts=attempts, next_attempt_at=next_attempt_at,
                       last_error=last_error, created_at=NOW - 600,
                       delivered_at=delivered_at, **masakari)


# -- the view ------------------------------------------------------------------

NOVA = [record(U1, "instance-00000001"), record(U2, "instance-00000002"),
        record(U3, "instance-00000003", state=State.REPORTED, failures=3,
               verdict=Verdict.FAILED, reason="guest-ping timed out", since=NOW - 125,
               episode=1)]


@pytest.mark.parametrize("records, snapshot, uuid, want", [
    # full names: Nova's instance names differ only in their last digit
    (NOVA, {}, U1, {"name": "instance-00000001", "state": "HEALTHY"}),
    (NOVA, {}, U2, {"name": "instance-00000002"}),
    (NOVA, {}, U3, {"name": "instance-00000003", "state": "REPORTED", "failures": 3,
                    "verdict": "FAILED", "reason": "guest-ping timed out",
                    "since": NOW - 125, "episode": 1}),
    # the Nova display name comes from the snapshot
    (NOVA, snap({U1: live("instance-00000001", "web-1")}), U1,
     {"display_name": "web-1", "listed": True}),
    # a journal row the monitor no longer lists (stopped)
    (NOVA, snap({U1: live("instance-00000001")}), U2, {"listed": False}),
    # unmonitored: why, instead of the journal row from when it was monitored
    (NOVA, snap(unmonitored={U2: "disabled by policy"}), U2,
     {"state": "UNMONITORED", "note": "disabled by policy", "verdict": "", "failures": 0,
      "name": "instance-00000002"}),
    # unmonitored and never in the journal: its name from the snapshot
    ([], snap(unmonitored={U4: "no guest agent channel"},
              unmonitored_names={U4: {"name": "instance-00000004", "display_name": "db-1"}}),
     U4, {"state": "UNMONITORED", "name": "instance-00000004", "display_name": "db-1",
          "note": "no guest agent channel"}),
    # blocked probes are a note beside the journal's reason
    (NOVA, snap({U1: live("instance-00000001", capability="guest-exec disabled")}), U1,
     {"note": "guest-exec disabled"}),
    # graces, as wall-clock times
    (NOVA, snap({U1: live("instance-00000001", startup=NOW + 25, disconnect=NOW + 80)}), U1,
     {"startup_grace_until": NOW + 25, "disconnect_grace_until": NOW + 80}),
    # untrusted text becomes one clean line
    ([record(U1, "vm\x1b[31m1", reason="bad\nline\x07")],
     snap({U1: live("vm1", display_name="x\r\ny")}), U1,
     {"name": "vm?[31m1", "reason": "bad line?", "display_name": "x y"}),
    # a snapshot from an older monitor: written_at a string, no probes or names
    (NOVA, {"host": "h", "written_at": "2023-11-14T22:13:17.000000",
            "monitored": {U1: {"name": "instance-00000001", "capability": ""}},
            "unmonitored": {}}, U1, {"display_name": "", "probes": (), "listed": True}),
])
def test_domain_view(records, snapshot, uuid, want):
    view = model.build_view(records, [], snapshot, NOW, PATH)
    (d,) = [d for d in view.domains if d.uuid == uuid]
    assert {k: getattr(d, k) for k in want} == want


def test_each_probe_keeps_its_own_verdict_and_age():
    snapshot = snap({U3: live("instance-00000003", probes=[
        probe("ping", at=NOW - 4),
        probe("exec", "FAILED", "exit status 1: db down", 1.25, at=NOW - 4),
        probe("heartbeat_file", "UNKNOWN", "guest-file-open disabled", 0.0, True, NOW - 4)])})
    (d,) = [d for d in model.build_view(NOVA, [], snapshot, NOW, PATH).domains
            if d.uuid == U3]
    assert [(p.name, p.verdict, p.seconds, p.skipped, p.at) for p in d.probes] == [
        ("ping", "HEALTHY", 0.003, False, NOW - 4),
        ("exec", "FAILED", 1.25, False, NOW - 4),
        ("heartbeat_file", "UNKNOWN", 0.0, True, NOW - 4)]
    assert d.probes[1].reason == "exit status 1: db down"


def test_domains_sorted_by_name_and_notifications_named():
    view = model.build_view(
        list(reversed(NOVA)), [entry(1, U3), entry(2, U4)],
        snap(unmonitored={U4: "no guest agent channel"},
             unmonitored_names={U4: {"name": "a-first", "display_name": ""}}), NOW, PATH)
    assert [d.name for d in view.domains] == [
        "a-first", "instance-00000001", "instance-00000002", "instance-00000003"]
    assert [(n.id, n.instance_uuid, n.name) for n in view.notifications] == [
        (1, U3, "instance-00000003"), (2, U4, "")]
    assert view.host == "compute-1" and view.snapshot_at == NOW - 3


@pytest.mark.parametrize("wanted, names", [
    (U2, ["instance-00000002"]),
    ("instance-00000003", ["instance-00000003"]),
    ("web-1", ["instance-00000001"]),          # Nova display name
    ("instance-0000000", None),                # no prefix matches
])
def test_select_one_domain(wanted, names):
    view = model.build_view(NOVA, [entry(1, U3), entry(2, U1, episode=1)],
                            snap({U1: live("instance-00000001", "web-1")}), NOW, PATH)
    one = model.select(view, wanted)
    if names is None:
        assert one is None
        return
    assert one is not None and [d.name for d in one.domains] == names
    assert {n.instance_uuid for n in one.notifications} <= {d.uuid for d in one.domains}


# -- text ----------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (4.9, "4s"), (59, "59s"), (60, "1m00s"), (185, "3m05s"),
    (3599, "59m59s"), (3600, "1h00m"), (8000, "2h13m"), (2 * 86400 - 1, "47h59m"),
    (2 * 86400, "2d00h"), (4 * 86400 + 7300, "4d02h"), (-5, "0s"),
])
def test_ago(seconds, text):
    assert render_text.ago(seconds) == text


def columns(line, header):
    """The cells of ``line`` cut at the header's column starts."""
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    return [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]


def test_text_keeps_full_names_aligned_with_ages_probes_and_graces():
    snapshot = snap({
        U1: live("instance-00000001", "web-1", [probe("ping", at=NOW - 4)],
                 startup=NOW + 25),
        U3: live("instance-00000003", "a-much-longer-display-name",
                 [probe("ping", at=NOW - 12), probe("exec", "FAILED", at=NOW - 12)])})
    text = render_text.render(model.build_view(NOVA, [], snapshot, NOW, PATH))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("DOMAIN "))
    rows = {line[:36]: columns(line, header) for line in lines if line[:36] in (U1, U2, U3)}
    assert rows[U1][:9] == [U1, "instance-00000001", "web-1", "HEALTHY", "1h00m", "0",
                            "HEALTHY", "startup 25s", "ping HEALTHY 4s"]
    assert rows[U2][1:3] == ["instance-00000002", "-"]
    assert rows[U2][9] == "not in the monitor's last listing (not running?)"
    assert rows[U3][1:9] == ["instance-00000003", "a-much-longer-display-name", "REPORTED",
                             "2m05s", "3", "FAILED", "-",
                             "ping HEALTHY 12s, exec FAILED 12s"]
    assert rows[U3][9] == "guest-ping timed out"
    assert "domains: 3 (2 HEALTHY, 1 REPORTED)" in text
    assert "monitor snapshot written 3s ago" in text


def test_text_readable_with_a_hundred_domains():
    records = [record("%08d-0000-0000-0000-000000000000" % i, "instance-%08x" % i)
               for i in range(100)]
    text = render_text.render(model.build_view(records, [], snap(), NOW, PATH))
    table = [line for line in text.splitlines() if line.startswith(("0", "DOMAIN"))]
    assert len(table) == 101
    # one column layout for all: every row's JOURNAL cell starts where the header's does
    at = table[0].index("JOURNAL")
    assert all(line[at:].startswith("HEALTHY") for line in table[1:])
    assert "domains: 100 (100 HEALTHY)" in text


def test_text_notifications_with_masakari_uuid_and_engine_status():
    delivered = entry(1, U3, status="delivered", attempts=1, delivered_at=NOW - 60,
                      masakari_uuid="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                      engine_status="finished", engine_checked_at=NOW - 10)
    pending = entry(2, U1, attempts=3, last_error="HTTP 503", next_attempt_at=NOW + 30)
    dead = entry(3, U2, status="dead", attempts=1, last_error="HTTP 400: bad payload",
                 delivered_at=NOW - 7200)
    view = model.build_view(NOVA, [delivered, pending, dead], snap(), NOW, PATH)
    (n1, n2, n3) = view.notifications
    assert (n1.masakari_uuid, n1.engine_status, n1.engine_checked_at) == (
        "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "finished", NOW - 10)
    lines = render_text.render(view).splitlines()
    header = next(line for line in lines if line.startswith("ID "))
    rows = [columns(line, header) for line in lines[lines.index(header) + 1:]]
    assert rows[0][:9] == ["1", U3, "instance-00000003", "1", n1.generated_time,
                           "delivered", "1", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                           "finished (10s ago)"]
    assert rows[0][9] == "delivered 1m00s ago"
    assert rows[1][5:] == ["pending", "3", "-", "-",
                           "next attempt in 30s; last error: HTTP 503"]
    assert rows[2][5:] == ["dead", "1", "-", "-", "died 2h00m ago; why: HTTP 400: bad payload"]
    assert "notifications: 3 (1 dead, 1 delivered, 1 pending)" in "\n".join(lines)


def test_text_detail_shows_each_probe_reason_and_duration():
    snapshot = snap({U3: live("instance-00000003", probes=[
        probe("ping", at=NOW - 4), probe("exec", "FAILED", "exit status 1", 1.25, at=NOW - 4)])})
    view = model.select(model.build_view(NOVA, [], snapshot, NOW, PATH), U3)
    assert view is not None
    text = render_text.render(view, detail=True)
    assert "probes of instance-00000003 (%s):" % U3 in text
    lines = text.splitlines()
    header = next(line for line in lines if line.strip().startswith("PROBE "))
    rows = [columns(line, header) for line in lines[lines.index(header) + 1:][:2]]
    assert rows == [["ping", "HEALTHY", "0.003s", "4s", ""],
                    ["exec", "FAILED", "1.250s", "4s", "exit status 1"]]


def test_text_without_journal_or_snapshot_says_so():
    text = render_text.render(model.build_view([], [], {}, NOW, PATH, journal_found=False))
    assert "no journal at %s" % PATH in text
    assert "no snapshot from a running monitor" in text
    assert text.endswith("notifications: none")


# -- JSON ----------------------------------------------------------------------

def test_json_version_1_shape():
    snapshot = snap({U3: live("instance-00000003", "db-1",
                              [probe("ping", at=NOW - 4)], disconnect=NOW + 80)})
    view = model.build_view(
        NOVA, [entry(7, U3, attempts=2, last_error="HTTP 503"),
               entry(8, U1, status="delivered", attempts=1, delivered_at=NOW - 60,
                     masakari_uuid="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                     engine_status="running", engine_checked_at=NOW - 10)],
        snapshot, NOW, PATH)
    data = json.loads(render_json.render(view))
    assert list(data) == ["version", "host", "generated_at", "journal", "journal_found",
                          "snapshot_written_at", "domains", "notifications", "storm",
                          "backlog"]
    assert data["version"] == 1 and data["host"] == "compute-1"
    assert data["generated_at"] == "2023-11-14T22:13:20Z"
    assert data["snapshot_written_at"] == "2023-11-14T22:13:17Z"
    d = next(d for d in data["domains"] if d["uuid"] == U3)
    assert d == {
        "uuid": U3, "name": "instance-00000003", "display_name": "db-1",
        "state": "REPORTED", "since": "2023-11-14T22:11:15Z", "consecutive_failures": 3,
        "episode": 1, "verdict": "FAILED", "reason": "guest-ping timed out", "note": "",
        "listed": True,
        "probes": [{"name": "ping", "verdict": "HEALTHY", "reason": "", "seconds": 0.003,
                    "skipped": False, "at": "2023-11-14T22:13:16Z"}],
        "startup_grace_until": None, "disconnect_grace_until": "2023-11-14T22:14:40Z",
        "held": "", "boot": "", "agent_timeout": None}
    (n, answered) = data["notifications"]
    assert {k: answered[k] for k in ("id", "status", "settled_at", "masakari_uuid",
                                     "engine_status", "engine_checked_at")} == {
        "id": 8, "status": "delivered", "settled_at": "2023-11-14T22:12:20Z",
        "masakari_uuid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "engine_status": "running", "engine_checked_at": "2023-11-14T22:13:10Z"}
    assert n == {
        "id": 7, "instance_uuid": U3, "name": "instance-00000003", "episode": 1,
        "generated_time": entry(7, U3).notification.generated_time, "status": "pending",
        "attempts": 2, "reason": "agent timeout", "last_error": "HTTP 503",
        "created_at": "2023-11-14T22:03:20Z", "settled_at": None,
        "next_attempt_at": "2023-11-14T22:13:50Z", "masakari_uuid": "",
        "engine_status": "", "engine_checked_at": None, "overdue": False}


# -- reading the files ----------------------------------------------------------

UUID = "11111111-2222-3333-4444-555555555555"


def reported(episode=1, t=100.0):
    return machine.Record(uuid=UUID, name="vm1", state=machine.State.REPORTED,
                          failures=3, episode=episode, last_reason="agent timeout",
                          since=t, seen_healthy=True, updated_at=t)


def test_load_beside_a_running_monitor(tmp_path):
    path = str(tmp_path / "journal.db")
    with Database(path) as monitor:
        save(monitor, reported(), make_notification(UUID, "host1", 100.0))
        snapshot_mod.write_snapshot(snapshot_mod.status_path(path), snap(
            {UUID: live("vm1", "web-1", [probe("ping")])}))
        view = model.load(path, NOW)
        assert [(d.uuid, d.name, d.display_name, d.state) for d in view.domains] == [
            (UUID, "vm1", "web-1", "REPORTED")]
        assert [(n.episode, n.status, n.attempts) for n in view.notifications] == [
            (1, "pending", 0)]
        # the monitor's connection still writes afterwards
        save(monitor, reported(episode=2, t=200.0),
             make_notification(UUID, "host1", 200.0))
        assert OutboxStore(monitor).rows()[-1].episode == 2
    assert [n.episode for n in model.load(path, NOW).notifications] == [1, 2]


def test_load_without_a_journal_creates_nothing(tmp_path):
    path = tmp_path / "state" / "journal.db"
    view = model.load(str(path), NOW)
    assert not view.journal_found and view.domains == () and view.notifications == ()
    assert not path.parent.exists()


def test_load_never_initialises_or_migrates(tmp_path):
    """Opening read-write would create the schema in an empty file (or
    migrate an old one) under the running monitor's feet."""
    path = tmp_path / "journal.db"
    path.write_bytes(b"")
    with pytest.raises(DatabaseError) as excinfo:
        model.load(str(path), NOW)
    assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)
    assert path.read_bytes() == b""
    assert not os.path.exists(str(path) + "-wal")


def test_load_leaves_the_journal_mode_alone(tmp_path):
    path = str(tmp_path / "journal.db")
    with Database(path) as s:
        save(s, reported(), make_notification(UUID, "host1", 100.0))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    conn.close()
    assert [d.uuid for d in model.load(path, NOW).domains] == [UUID]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


def test_a_torn_or_foreign_snapshot_is_no_snapshot(tmp_path):
    path = tmp_path / snapshot_mod.STATUS_NAME
    path.write_text('{"host": "h", "monit')
    assert snapshot_mod.read_snapshot(str(path)) is None
    path.write_text("[1, 2]")
    assert snapshot_mod.read_snapshot(str(path)) is None


@pytest.mark.parametrize("status, attempts, retry_max, overdue", [
    ("pending", 11, 12, False),
    ("pending", 12, 12, True),
    ("pending", 30, None, False),       # the limit unknown: never claimed
    ("delivered", 30, 12, False),
    ("dead", 30, 12, False),
])
def test_overdue_is_pending_past_retry_max(status, attempts, retry_max, overdue):
    view = model.build_view([], [entry(1, U1, status=status, attempts=attempts)], {}, NOW,
                            PATH, retry_max=retry_max)
    (n,) = view.notifications
    assert n.overdue is overdue
    assert json.loads(render_json.render(view))["notifications"][0]["overdue"] is overdue
    assert ("OVERDUE; next attempt" in render_text.render(view)) is overdue


@pytest.mark.parametrize("agent_timeout,shown", [
    (2, "agent timeout 2 s (set while suspect)"),
    (None, ""),             # libvirt's default: healthy domains carry no trace
    ("2", ""),              # an odd snapshot value is not trusted
])
def test_agent_timeout_in_force_is_shown(agent_timeout, shown):
    row = dict(live("instance-00000001"), agent_timeout=agent_timeout)
    view = model.build_view([record(U1, "instance-00000001")], [], snap({U1: row}), NOW, PATH)
    (d,) = view.domains
    assert d.agent_timeout == (2.0 if shown else None)
    text = render_text.render(view)
    assert (shown in text) if shown else ("agent timeout" not in text)
    assert json.loads(render_json.render(view))["domains"][0]["agent_timeout"] == d.agent_timeout
