"""ResetMarkerProbe: one reset per new token, never a loop across restarts."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.probes.base import ProbeConfigError
from masakarimonitors_iim.probes.reset_marker import ResetMarkerProbe
from masakarimonitors_iim.verdict import ProbeResult, Verdict, combine

PATH = "/var/lib/myapp/request-reset"


def make_probe(clock, **params):
    params.setdefault("path", PATH)
    return clock.attach(ResetMarkerProbe(params))


def test_new_token_requests_exactly_one_reset(agent, clock, guest_files):
    probe = make_probe(clock)
    assert probe.run(agent, 2.0) == ProbeResult.healthy()   # no marker: baseline

    guest_files.files[PATH] = b"req-1\n"
    result = probe.run(agent, 2.0)
    assert result.verdict is Verdict.FAILED and result.reset_requested
    assert "req-1" in result.reason

    for _ in range(3):   # same token: asked once, answered once
        again = probe.run(agent, 2.0)
        assert again.verdict is Verdict.HEALTHY and not again.reset_requested

    guest_files.files[PATH] = b"req-2\n"
    assert probe.run(agent, 2.0).reset_requested
    assert guest_files.open_handles == {}


def test_marker_surviving_the_restart_does_not_trigger_again(agent, clock, guest_files):
    guest_files.files[PATH] = b"req-1"
    before = make_probe(clock)
    before.run(agent, 2.0)                       # baseline (monitor just started)
    guest_files.files[PATH] = b"req-2"
    assert before.run(agent, 2.0).reset_requested

    # The VM is recovered; the marker is on a persistent disk and the
    # monitor builds a new probe for the restarted domain.
    after = make_probe(clock)
    for _ in range(5):
        assert not after.run(agent, 2.0).reset_requested


def test_token_present_at_first_read_is_only_a_baseline(agent, clock, guest_files):
    guest_files.files[PATH] = b"req-1"
    probe = make_probe(clock)
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY


def test_cleared_then_rewritten_token_asks_again(agent, clock, guest_files):
    probe = make_probe(clock)
    probe.run(agent, 2.0)
    guest_files.files[PATH] = b"x"
    assert probe.run(agent, 2.0).reset_requested
    guest_files.files[PATH] = b"  \n"             # empty: no request
    assert not probe.run(agent, 2.0).reset_requested
    guest_files.files[PATH] = b"x"
    assert probe.run(agent, 2.0).reset_requested


def test_unreadable_marker_is_unknown_and_keeps_the_baseline(agent, clock, guest_files):
    guest_files.files[PATH] = b"req-1"
    probe = make_probe(clock, max_bytes=8)
    probe.run(agent, 2.0)
    guest_files.files[PATH] = b"z" * 100
    assert probe.run(agent, 2.0).verdict is Verdict.UNKNOWN
    guest_files.files[PATH] = b"req-1"
    assert not probe.run(agent, 2.0).reset_requested


def test_blocked_file_rpc_is_unknown(agent, clock, guest_files, replay):
    guest_files.open_error = replay("blocked_guest_file_open")
    result = make_probe(clock).run(agent, 2.0)
    assert result.verdict is Verdict.UNKNOWN and not result.reset_requested


def test_token_is_sanitised_in_the_reason(agent, clock, guest_files):
    probe = make_probe(clock)
    probe.run(agent, 2.0)
    guest_files.files[PATH] = b"\x1b]0;owned\x07\nFAKE LOG LINE"
    result = probe.run(agent, 2.0)
    assert result.reset_requested
    assert "\x1b" not in result.reason and "\n" not in result.reason


def test_reset_survives_combination_with_healthy_probes(agent, clock, guest_files):
    probe = make_probe(clock)
    probe.run(agent, 2.0)
    guest_files.files[PATH] = b"req"
    combined = combine([ProbeResult.healthy(), probe.run(agent, 2.0)])
    assert combined.reset_requested and combined.verdict is Verdict.FAILED


@pytest.mark.parametrize("params, field", [
    ({}, "path"),
    ({"path": "relative"}, "path"),
    ({"path": PATH, "max_bytes": 0}, "max_bytes"),
    ({"path": PATH, "token": "x"}, "token"),
])
def test_invalid_params_name_the_field(params, field):
    with pytest.raises(ProbeConfigError) as info:
        ResetMarkerProbe(params)
    assert field in str(info.value)
