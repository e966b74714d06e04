"""Capability check: blocked RPCs make a probe UNKNOWN with a reason."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.hypervisor.types import AgentError, ErrorKind
from masakarimonitors_iim.probes import capabilities
from masakarimonitors_iim.probes.exec import ExecProbe
from masakarimonitors_iim.probes.heartbeat_file import HeartbeatFileProbe
from masakarimonitors_iim.probes.ping import PingProbe
from masakarimonitors_iim.verdict import Verdict


@pytest.fixture
def guest_info(recorded):
    """guest-info of the testbed guest started with
    ga_block=guest-exec,guest-file-open: the recorded disabled entries
    plus enabled ones in the same shape."""
    enabled = [{"enabled": True, "name": n, "success-response": True}
               for n in ("guest-ping", "guest-info", "guest-exec-status",
                         "guest-file-read", "guest-file-close")]
    return {"version": "7.2.19",
            "supported_commands": recorded["blocked_shown_in_guest_info"] + enabled}


@pytest.mark.parametrize("required, blocked", [
    (set(), set()),
    ({"guest-ping"}, set()),
    ({"guest-exec", "guest-exec-status"}, {"guest-exec"}),
    ({"guest-file-open", "guest-file-read", "guest-file-close"}, {"guest-file-open"}),
    ({"guest-get-time"}, {"guest-get-time"}),   # not listed: too old an agent
])
def test_blocked_commands(guest_info, required, blocked):
    assert capabilities.blocked_commands(required, guest_info) == blocked


@pytest.mark.parametrize("info", [None, {}, {"supported_commands": "all"}, [], "x"])
def test_unreadable_guest_info_blocks_nothing(info):
    assert capabilities.blocked_commands({"guest-exec"}, info) == set()


def test_entry_without_enabled_flag_counts_as_blocked():
    info = {"supported_commands": [{"name": "guest-exec"}, "junk", {"enabled": True}]}
    assert capabilities.blocked_commands({"guest-exec"}, info) == {"guest-exec"}


def test_reason_says_disabled_or_missing_and_the_fix(guest_info):
    reason = capabilities.blocked_reason("exec", {"guest-exec", "guest-get-time"}, guest_info)
    assert "guest-exec disabled" in reason
    assert "guest-get-time not supported" in reason
    assert "7.2.19" in reason and "--block-rpcs" in reason


def test_reason_sanitises_the_agent_version():
    info = {"version": "\x1b[2J" + "9" * 500, "supported_commands": []}
    reason = capabilities.blocked_reason("exec", {"guest-exec"}, info)
    assert "\x1b" not in reason and len(reason) < 300


@pytest.mark.parametrize("probe, verdict", [
    (PingProbe({}), None),
    (ExecProbe({"command": ["/bin/true"]}), Verdict.UNKNOWN),
    (HeartbeatFileProbe({"path": "/run/hb", "max_age": 30}), Verdict.UNKNOWN),
])
def test_check_probe_at_discovery(guest_info, probe, verdict):
    result = capabilities.check_probe(probe, guest_info)
    if verdict is None:
        assert result is None
    else:
        assert result.verdict is verdict
        assert repr(probe.name) in result.reason


@pytest.mark.parametrize("key, blocked", [
    ("blocked_guest_exec", True),
    ("blocked_guest_file_open", True),
    ("unknown_command", True),
    ("guest_exec_status_bad_pid", False),
    ("agent_not_connected_right_after_create", False),
    ("paused_domain", False),
    ("malformed_json", False),
])
def test_is_blocked_error_on_recorded_errors(replay, key, blocked):
    assert capabilities.is_blocked_error(replay(key)) is blocked


def test_is_blocked_error_falls_back_to_the_wording(recorded):
    msg = recorded["blocked_guest_exec"]["err"]["msg"]
    assert capabilities.is_blocked_error(AgentError(ErrorKind.COMMAND_FAILED, msg))
    assert not capabilities.is_blocked_error(AgentError(ErrorKind.AGENT_TIMEOUT, msg))
