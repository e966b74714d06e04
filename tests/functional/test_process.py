"""The real ``masakari-iim`` process against a real libvirt connection.

libvirt's test driver (test:///default) is a real libvirt connection with
one running domain, "test", which has no guest agent channel: enough to
show discovery, the unmonitored listing, signals and start-up errors.
Agent verdicts need real guests: see tests/e2e.
"""
import signal
import subprocess
import time

import pytest
from tests.functional.helpers import BIN, wait_for, log_text


def write_conf(tmp_path, extra=""):
    path = tmp_path / "masakarimonitors.conf"
    path.write_text(
        "[DEFAULT]\nhostname = functional-host\nlog_file = %s\ndebug = true\n"
        "[libvirt]\nconnection_uri = test:///default\n"
        "[introspectiveinstancemonitor]\njournal_path = %s\nnotifier = log\n"
        "guest_monitoring_interval = 1\n%s"
        % (tmp_path / "iim.log", tmp_path / "state" / "journal.sqlite", extra))
    return path


@pytest.fixture
def monitor(tmp_path):
    conf = write_conf(tmp_path)
    proc = subprocess.Popen([BIN, "--config-file", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield proc, conf
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_lists_domain_without_agent_as_unmonitored(monitor, tmp_path):
    proc, conf = monitor
    wait_for(lambda: "has no guest agent channel" in log_text(tmp_path), 20,
             "the unmonitored domain to be logged")
    wait_for(lambda: (tmp_path / "state" / "iim-status.json").exists(), 10, "status file")
    out = subprocess.run([BIN, "status", "--config-file", str(conf)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if "  UNMONITORED  " in line]
    # the domain's full name, from the monitor's snapshot, and why
    assert len(row) == 1 and " test " in row[0] and "no guest agent channel" in row[0]
    assert "notifications: none" in out.stdout


def test_sigterm_stops_within_five_seconds(monitor, tmp_path):
    proc, _ = monitor
    wait_for(lambda: "starting" in log_text(tmp_path), 20, "start-up")
    time.sleep(1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert time.monotonic() - t0 < 5.0
    assert "stopped" in log_text(tmp_path)


def test_sighup_reloads_and_keeps_running(monitor, tmp_path):
    proc, _ = monitor
    wait_for(lambda: "starting" in log_text(tmp_path), 20, "start-up")
    time.sleep(0.5)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "policy reloaded" in log_text(tmp_path), 10, "reload")
    assert proc.poll() is None


@pytest.mark.parametrize("extra, words", [
    ("guest_monitoring_timeout = soon\n", "guest_monitoring_timeout"),
    ("guest_monitoring_threshold = 3\n", "guest_monitoring_threshold"),
])
def test_bad_config_fails_at_start_with_one_line(tmp_path, extra, words):
    conf = write_conf(tmp_path, extra)
    out = subprocess.run([BIN, "--config-file", str(conf)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr


def test_password_never_reaches_the_log(tmp_path):
    conf = write_conf(tmp_path)
    with open(conf, "a") as fh:
        fh.write("[api]\nauth_type = password\nauth_url = http://127.0.0.1:9/v3\n"
                 "username = masakari\npassword = s3cr3t-Pa55\n")
    proc = subprocess.Popen([BIN, "--config-file", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "has no guest agent channel" in log_text(tmp_path), 20, "start-up")
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=10)[0].decode()
    assert "s3cr3t-Pa55" not in log_text(tmp_path) + output
    assert "password" in log_text(tmp_path)      # the option is logged, masked


def test_policy_show_prints_the_effective_policy_and_its_sources(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: patient\n    match:\n"
                      "      domain_name: 'te*'\n    failure_threshold: 7\n")
    conf = write_conf(tmp_path, "policy_file = %s\n" % policy)
    out = subprocess.run([BIN, "policy", "show", "test", "--config-file", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "domain test (" in out.stdout
    threshold = [line for line in out.stdout.splitlines() if "failure_threshold" in line]
    assert threshold and "7" in threshold[0] and "patient" in threshold[0], out.stdout


def test_policy_show_rejects_an_invalid_policy_file_in_one_line(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: bad\n    failure_threshold: many\n")
    conf = write_conf(tmp_path, "policy_file = %s\n" % policy)
    out = subprocess.run([BIN, "policy", "show", "test", "--config-file", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'bad'" in lines[0] and "failure_threshold" in lines[0]
