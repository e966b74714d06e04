"""HeartbeatFileProbe: fresh, stale, stalled, missing, skewed, and handles."""
from __future__ import annotations

import base64

import pytest

from masakarimonitors_iim.hypervisor.types import AgentError, ErrorKind
from masakarimonitors_iim.probes.base import ProbeConfigError
from masakarimonitors_iim.probes.heartbeat_file import HeartbeatFileProbe
from masakarimonitors_iim.verdict import Verdict

PATH = "/run/myapp/heartbeat"
INTERVAL = 5.0


def make_probe(clock, **params):
    params.setdefault("path", PATH)
    params.setdefault("max_age", 30)
    return clock.attach(HeartbeatFileProbe(params))


def write_ts(guest_files, clock, skew=0.0):
    """The application refreshes the file with the guest's clock."""
    guest_files.files[PATH] = b"%.3f\n" % (clock.time() + skew)


def test_fresh_timestamp_is_healthy_at_first_read(agent, clock, guest_files):
    write_ts(guest_files, clock, -2)
    probe = make_probe(clock)

    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY
    assert guest_files.open_handles == {}
    assert agent.names() == ["guest-file-open", "guest-file-read", "guest-file-close"]
    read_args = agent.calls_to("guest-file-read")[0]
    assert read_args["count"] == 65   # max_bytes + 1, to detect oversize files


def test_stalled_timestamp_fails_after_max_age_of_host_time(agent, clock, guest_files):
    probe = make_probe(clock)
    for _ in range(4):
        write_ts(guest_files, clock)
        assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY
        clock.advance(INTERVAL)
    # The application stops writing.
    verdicts = []
    for _ in range(9):
        verdicts.append(probe.run(agent, 2.0).verdict)
        clock.advance(INTERVAL)
    first_failure = verdicts.index(Verdict.FAILED)
    # The last write was seen at the round that read it (t=15 s); FAILED
    # at the first round more than max_age=30 s of host time after that.
    assert first_failure == 5
    assert all(v is Verdict.HEALTHY for v in verdicts[:first_failure])
    result = probe.run(agent, 2.0)
    assert "not updated for" in result.reason


def test_stale_at_first_read_is_unknown_then_failed(agent, clock, guest_files):
    write_ts(guest_files, clock, -3600)   # stale, or a guest clock an hour behind
    probe = make_probe(clock)

    verdicts = []
    for _ in range(8):
        clock.advance(INTERVAL)
        verdicts.append(probe.run(agent, 2.0).verdict)
    assert verdicts[:5] == [Verdict.UNKNOWN] * 5
    assert verdicts[6:] == [Verdict.FAILED] * 2


def test_guest_clock_behind_but_advancing_is_healthy(agent, clock, guest_files):
    probe = make_probe(clock)
    write_ts(guest_files, clock, -3600)
    assert probe.run(agent, 2.0).verdict is Verdict.UNKNOWN
    clock.advance(INTERVAL)
    write_ts(guest_files, clock, -3600)
    result = probe.run(agent, 2.0)
    assert result.verdict is Verdict.HEALTHY
    assert "time sync" in result.reason


def test_guest_clock_ahead_and_stalled_still_fails(agent, clock, guest_files):
    probe = make_probe(clock)
    write_ts(guest_files, clock, +3600)   # future timestamp, then nothing
    verdicts = []
    for _ in range(8):
        verdicts.append(probe.run(agent, 2.0).verdict)
        clock.advance(INTERVAL)
    assert Verdict.HEALTHY not in verdicts
    assert verdicts[-1] is Verdict.FAILED


def test_small_skew_is_tolerated(agent, clock, guest_files):
    write_ts(guest_files, clock, +8)   # guest 8 s ahead, max_skew 10
    assert make_probe(clock).run(agent, 2.0).verdict is Verdict.HEALTHY


def test_counter_must_advance(agent, clock, guest_files):
    probe = make_probe(clock, format="counter")
    guest_files.files[PATH] = b"41\n"
    assert probe.run(agent, 2.0).verdict is Verdict.UNKNOWN   # not yet seen moving
    clock.advance(INTERVAL)
    guest_files.files[PATH] = b"42\n"
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY
    clock.advance(INTERVAL)
    verdicts = []
    for _ in range(6):   # the counter last moved at the read 5 s ago
        verdicts.append(probe.run(agent, 2.0))
        clock.advance(INTERVAL)
    assert [r.verdict for r in verdicts[:5]] == [Verdict.HEALTHY] * 5   # within max_age
    assert verdicts[5].verdict is Verdict.FAILED
    assert "not updated for 30 s" in verdicts[5].reason


def test_counter_reset_by_application_restart_counts_as_life(agent, clock, guest_files):
    probe = make_probe(clock, format="counter")
    guest_files.files[PATH] = b"900"
    probe.run(agent, 2.0)
    clock.advance(INTERVAL)
    guest_files.files[PATH] = b"1"
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY


def test_missing_before_first_read_is_startup(agent, clock, guest_files):
    probe = make_probe(clock)
    for _ in range(20):   # however long: the application may not be installed yet
        result = probe.run(agent, 2.0)
        assert result.verdict is Verdict.UNKNOWN
        assert "waiting for first heartbeat" in result.reason
        clock.advance(INTERVAL)


def test_missing_after_first_read_fails(agent, clock, guest_files):
    probe = make_probe(clock)
    write_ts(guest_files, clock)
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY
    del guest_files.files[PATH]
    result = probe.run(agent, 2.0)
    assert result.verdict is Verdict.FAILED
    assert "disappeared" in result.reason


def test_handle_closed_when_read_fails(agent, clock, guest_files, replay):
    write_ts(guest_files, clock)
    guest_files.read_error = replay("agent_sigstopped", 0)
    probe = make_probe(clock)

    with pytest.raises(AgentError):
        probe.run(agent, 2.0)

    assert guest_files.opened == 1
    assert guest_files.open_handles == {}
    assert agent.names()[-1] == "guest-file-close"


def test_handle_whose_close_timed_out_is_closed_later(agent, clock, guest_files, replay):
    write_ts(guest_files, clock)
    guest_files.close_error = replay("agent_sigstopped", 0)
    probe = make_probe(clock)
    probe.run(agent, 2.0)
    assert len(guest_files.open_handles) == 1

    guest_files.close_error = None
    probe.run(agent, 2.0)
    assert guest_files.open_handles == {}

    guest_files.close_error = replay("agent_sigstopped", 0)
    probe.run(agent, 2.0)
    guest_files.close_error = None
    probe.close(agent)
    assert guest_files.open_handles == {}


def test_blocked_file_open_is_unknown(agent, clock, guest_files, replay):
    guest_files.open_error = replay("blocked_guest_file_open")
    result = make_probe(clock).run(agent, 2.0)
    assert result.verdict is Verdict.UNKNOWN
    assert "guest-file-open" in result.reason and "refuses" in result.reason


def test_oversized_file_is_unknown(agent, clock, guest_files):
    guest_files.files[PATH] = b"1" * 500
    result = make_probe(clock, max_bytes=16).run(agent, 2.0)
    assert result.verdict is Verdict.UNKNOWN
    assert "max_bytes" in result.reason
    assert guest_files.open_handles == {}


def test_agent_sending_more_than_asked_is_refused(agent, clock, guest_files):
    write_ts(guest_files, clock)
    agent.script("guest-file-read", {"count": 10_000, "eof": True,
                                     "buf-b64": base64.b64encode(b"9" * 10_000).decode()})
    result = make_probe(clock).run(agent, 2.0)
    assert result.verdict is Verdict.UNKNOWN
    assert guest_files.open_handles == {}


def test_garbage_is_unknown_then_failed_once_stale(agent, clock, guest_files):
    probe = make_probe(clock)
    write_ts(guest_files, clock)
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY
    guest_files.files[PATH] = b"\x1b[2J not a number\n"
    result = probe.run(agent, 2.0)
    assert result.verdict is Verdict.UNKNOWN
    assert "\x1b" not in result.reason
    verdicts = []
    for _ in range(7):
        clock.advance(INTERVAL)
        verdicts.append(probe.run(agent, 2.0).verdict)
    assert verdicts[:5] == [Verdict.UNKNOWN] * 5
    assert verdicts[-1] is Verdict.FAILED


@pytest.mark.parametrize("content", [b"nan", b"inf", b"1e9", b"-5", b"1_700_000_000", b""])
def test_values_that_are_not_plain_numbers_are_refused(agent, clock, guest_files, content):
    guest_files.files[PATH] = content
    assert make_probe(clock).run(agent, 2.0).verdict is Verdict.UNKNOWN


def test_time_the_domain_was_paused_is_not_held_against_it(agent, clock, guest_files):
    probe = make_probe(clock, format="counter")
    guest_files.files[PATH] = b"1"
    probe.run(agent, 2.0)
    clock.advance(INTERVAL)
    guest_files.files[PATH] = b"2"
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY

    clock.advance(600)   # paused: no reads, no writes
    result = probe.run(agent, 2.0)
    assert result.verdict is Verdict.UNKNOWN
    clock.advance(INTERVAL)
    guest_files.files[PATH] = b"3"
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY


def test_after_a_pause_the_application_gets_half_max_age_to_write(agent, clock, guest_files):
    probe = make_probe(clock, format="counter")
    guest_files.files[PATH] = b"1"
    probe.run(agent, 2.0)
    clock.advance(INTERVAL)
    guest_files.files[PATH] = b"2"
    probe.run(agent, 2.0)

    clock.advance(600)   # paused; after resume the application is dead
    verdicts = []
    for _ in range(5):
        verdicts.append(probe.run(agent, 2.0).verdict)
        clock.advance(INTERVAL)
    # 15 s for the pause, then 5 s a round: more than 30 s at the 4th read.
    assert verdicts == [Verdict.UNKNOWN] * 3 + [Verdict.FAILED] * 2


def test_reads_farther_apart_than_max_age_still_fail_in_the_end(agent, clock, guest_files):
    # Misconfigured: interval 45 s, max_age 30 s. Slower, but never silent.
    probe = make_probe(clock, format="counter")
    guest_files.files[PATH] = b"7"
    verdicts = []
    for _ in range(4):
        verdicts.append(probe.run(agent, 2.0).verdict)
        clock.advance(45)
    assert verdicts[-1] is Verdict.FAILED


def test_agent_errors_other_than_file_errors_propagate(agent, clock, guest_files, replay):
    guest_files.open_error = replay("agent_not_connected_right_after_create")
    with pytest.raises(AgentError) as info:
        make_probe(clock).run(agent, 2.0)
    assert info.value.kind is ErrorKind.AGENT_NOT_CONNECTED


@pytest.mark.parametrize("params, field", [
    ({"max_age": 30}, "path"),
    ({"path": "run/hb", "max_age": 30}, "path"),
    ({"path": 5, "max_age": 30}, "path"),
    ({"path": PATH}, "max_age"),
    ({"path": PATH, "max_age": 0}, "max_age"),
    ({"path": PATH, "max_age": "30"}, "max_age"),
    ({"path": PATH, "max_age": 30, "format": "iso8601"}, "format"),
    ({"path": PATH, "max_age": 30, "max_bytes": 10_000}, "max_bytes"),
    ({"path": PATH, "max_age": 30, "format": "counter", "max_skew": 5}, "max_skew"),
    ({"path": PATH, "max_age": 30, "maxage": 30}, "maxage"),
])
def test_invalid_params_name_the_field(params, field):
    with pytest.raises(ProbeConfigError) as info:
        HeartbeatFileProbe(params)
    assert field in str(info.value) and "heartbeat_file" in str(info.value)


def test_windows_path_accepted():
    probe = HeartbeatFileProbe({"path": "C:\\app\\heartbeat.txt", "max_age": 60})
    assert probe.required_commands() == {"guest-file-open", "guest-file-read",
                                         "guest-file-close"}
