"""The real ``masakari-iim`` command line: each sub-command's help, status
as JSON beside a running monitor, and the outbox commands on a database
holding a dead letter (libvirt's test driver, as in test_process.py)."""
import json
import signal
import subprocess

import pytest

from masakarimonitors_iim.db import Database
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox.store import DEAD, OutboxStore
from tests.functional.helpers import BIN, wait_for

VM = "11111111-2222-3333-4444-555555555555"


def write_conf(tmp_path):
    path = tmp_path / "masakarimonitors.conf"
    path.write_text(
        "[DEFAULT]\nhostname = functional-host\nlog_file = %s\n"
        "[libvirt]\nconnection_uri = test:///default\n"
        "[introspectiveinstancemonitor]\njournal_path = %s\nnotifier = log\n"
        "guest_monitoring_interval = 1\n"
        % (tmp_path / "iim.log", tmp_path / "state" / "journal.sqlite"))
    return path


def iim(*args, check=True):
    out = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize("command, words", [
    ([], ["status", "policy", "outbox", "--config-file"]),
    (["run"], ["Run the monitor in the foreground"]),
    (["status"], ["--json", "DOMAIN", "read-only"]),
    (["policy"], ["show"]),
    (["policy", "show"], ["DOMAIN", "effective policy"]),
    (["outbox"], ["list", "requeue"]),
    (["outbox", "list"], ["--status"]),
    (["outbox", "requeue"], ["ID", "dead"]),
])
def test_each_command_has_its_own_help(command, words):
    out = iim(*command, "--help")
    assert out.stderr == ""
    assert out.stdout.startswith("usage: masakari-iim %s" % " ".join(command))
    for word in words:
        assert word in out.stdout, out.stdout
    if command:     # the logging flags belong to the main command only
        assert "--log-file" not in out.stdout


def test_a_bad_command_line_exits_2():
    out = iim("outbox", "requeue", "seven", check=False)
    assert out.returncode == 2 and "invalid int value" in out.stderr


def test_status_json_beside_a_running_monitor(tmp_path):
    conf = write_conf(tmp_path)
    proc = subprocess.Popen([BIN, "--config-file", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "state" / "iim-status.json").exists(), 20,
                 "the status snapshot")
        # --config-file before the command, this time
        data = json.loads(iim("--config-file", str(conf), "status", "--json").stdout)
        assert data["version"] == 1 and data["host"] == "functional-host"
        assert data["journal_found"] and data["snapshot_written_at"]
        (domain,) = data["domains"]
        assert (domain["name"], domain["state"], domain["note"]) == (
            "test", "UNMONITORED", "no guest agent channel")
        one = json.loads(iim("status", "--json", "test", "--config-file", str(conf)).stdout)
        assert one["domains"] == [domain]
        missing = iim("status", "nosuch", "--config-file", str(conf), check=False)
        assert missing.returncode == 1 and "no domain 'nosuch'" in missing.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_policy_show(tmp_path):
    out = iim("policy", "show", "test", "--config-file", str(write_conf(tmp_path)))
    assert out.stdout.startswith("domain test (")
    assert "no guest agent channel, unmonitored" in out.stdout


def dead_letter(journal):
    """A database with one dead notification, as the sender leaves one
    Masakari refused."""
    with Database(str(journal)) as db:
        rec = machine.Record(uuid=VM, name="instance-00000001",
                             state=machine.State.REPORTED, failures=3, episode=1,
                             last_reason="agent timeout", since=100.0,
                             seen_healthy=True, updated_at=100.0)
        store = OutboxStore(db)
        with db.transaction() as tx:
            JournalStore(db).save(rec, tx)
            store.add(make_notification(VM, "functional-host", 100.0), 1,
                      "agent timeout", 100.0, tx)
        (entry,) = store.rows()
        assert store.begin_attempt(entry.id) == 0
        assert store.settle(entry.id, DEAD, 110.0, "HTTP 400: payload refused")
        return entry.id


def test_outbox_list_and_requeue_of_a_dead_letter(tmp_path):
    conf = write_conf(tmp_path)
    (tmp_path / "state").mkdir()
    entry_id = dead_letter(tmp_path / "state" / "journal.sqlite")

    listing = iim("outbox", "list", "--config-file", str(conf)).stdout.splitlines()
    (row,) = [line for line in listing if line.startswith("%d " % entry_id)]
    assert VM in row and "instance-00000001" in row and " dead " in row
    assert "why: HTTP 400: payload refused" in row
    assert iim("outbox", "list", "--status", "pending", "--config-file",
               str(conf)).stdout == "notifications: none\n"

    out = iim("outbox", "requeue", str(entry_id), "--config-file", str(conf))
    assert out.stdout.startswith("notification #%d (instance %s, episode 1) re-queued"
                                 % (entry_id, VM))
    assert len(out.stdout.splitlines()) == 1
    again = iim("outbox", "requeue", str(entry_id), "--config-file", str(conf), check=False)
    assert again.returncode == 1 and "is pending, not dead" in again.stderr
    missing = iim("outbox", "requeue", "99", "--config-file", str(conf), check=False)
    assert missing.returncode == 1 and "no notification #99" in missing.stderr


def test_requeue_while_the_monitor_runs_gets_the_letter_delivered(tmp_path):
    conf = write_conf(tmp_path)
    (tmp_path / "state").mkdir()
    entry_id = dead_letter(tmp_path / "state" / "journal.sqlite")
    proc = subprocess.Popen([BIN, "--config-file", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "state" / "iim-status.json").exists(), 20,
                 "the monitor to start")
        iim("outbox", "requeue", str(entry_id), "--config-file", str(conf))

        def delivered():
            data = json.loads(iim("status", "--json", "--config-file", str(conf)).stdout)
            (n,) = data["notifications"]
            return n if n["status"] == "delivered" else None

        n = wait_for(delivered, 15, "the running monitor to deliver the re-queued letter")
        assert n["attempts"] == 2        # the refused one, and the one after requeue
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
