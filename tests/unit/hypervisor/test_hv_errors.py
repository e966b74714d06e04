"""libvirt error -> ErrorKind (hypervisor.errors) -> verdict (verdict.verdict_for), as tables."""
from __future__ import annotations

import itertools

import hv_recorded
import libvirt
import pytest

from masakarimonitors_iim.hypervisor import errors
from masakarimonitors_iim.hypervisor.errors import agent_reply_error_kind, classify
from masakarimonitors_iim.hypervisor.types import DomainState, ErrorKind
from masakarimonitors_iim.verdict import Verdict, verdict_for

K = ErrorKind

# What each recorded situation must be classified as, by case id.
RECORDED_EXPECTED = {
    "agent_not_connected_right_after_create": K.AGENT_NOT_CONNECTED,
    "agent_never_started_in_guest": K.AGENT_NOT_CONNECTED,
    "agent_process_exited": K.AGENT_NOT_CONNECTED,
    "domain_shut_off": K.DOMAIN_NOT_RUNNING,
    "after_destroy": K.DOMAIN_NOT_RUNNING,
    "paused_domain": K.DOMAIN_NOT_RUNNING,
    "lookup_nonexistent_domain": K.NO_DOMAIN,
    "blocked_guest_exec": K.COMMAND_DISABLED,
    "blocked_guest_file_open": K.COMMAND_DISABLED,
    "unknown_command": K.COMMAND_NOT_FOUND,
    "guest_exec_status_bad_pid": K.COMMAND_FAILED,
    "malformed_json": K.BAD_REPLY,
    "agent_sigstopped": K.AGENT_TIMEOUT,
    "qemu_process_sigstopped": K.AGENT_TIMEOUT,
    "qemu_sigstopped_with_agentSetResponseTimeout_1": K.AGENT_TIMEOUT,
}


def _case_key(case_id: str) -> str:
    return case_id.split(".")[0].split("[")[0]


RECORDED = list(hv_recorded.recorded_errors())


def test_every_recorded_error_has_an_expectation():
    # A new situation in the recording must be given a row here.
    missing = {_case_key(c) for c, *_ in RECORDED} - set(RECORDED_EXPECTED)
    assert not missing
    assert len(RECORDED) >= len(RECORDED_EXPECTED)


@pytest.mark.parametrize("case_id,code,domain,message", RECORDED,
                         ids=[r[0] for r in RECORDED])
def test_classify_recorded_agent_situations(case_id, code, domain, message):
    assert classify(code, domain, message) is RECORDED_EXPECTED[_case_key(case_id)]


@pytest.mark.parametrize("code,domain,message,expected", [
    # recorded: libvirtd SIGSTOPped, keepalive gave up
    (*hv_recorded.KEEPALIVE_TIMEOUT, K.CONNECTION_LOST),
    # recorded: libvirtd gone, calls on the old connection
    (*hv_recorded.SOCKET_CLOSED, K.CONNECTION_LOST),
    # recorded: reconnecting while libvirtd is down
    (*hv_recorded.CONNECT_FAILED, K.CONNECTION_LOST),
    # recorded: a call on a virConnect we closed ourselves
    (*hv_recorded.CLOSED_CONN_POINTER, K.CONNECTION_LOST),
    # recorded: test:///default has no agent support
    (*hv_recorded.TEST_DRIVER_AGENT, K.UNSUPPORTED),
    (*hv_recorded.TEST_DRIVER_RESPONSE_TIMEOUT, K.UNSUPPORTED),
    (*hv_recorded.TEST_DRIVER_NO_DOMAIN, K.NO_DOMAIN),
    (*hv_recorded.INVALID_UUID, K.OTHER),
    # libvirt source messages for situations not recorded here
    (38, 7, "End of file while reading data: Input/output error", K.CONNECTION_LOST),
    (38, 7, "Cannot recv data: Connection reset by peer", K.CONNECTION_LOST),
    (38, 13, "Cannot write data: Broken pipe", K.CONNECTION_LOST),
    (39, 7, "RPC error", K.CONNECTION_LOST),
    (5, 13, "no connection", K.CONNECTION_LOST),
    (38, 10, "cannot open file '/var/run/x': Permission denied", K.OTHER),
    (86, 10, "Guest agent is not responding: QEMU guest agent is not available due to an "
             "error", K.AGENT_NOT_CONNECTED),
    (86, 10, "Guest agent is not responding: Guest agent timeout", K.AGENT_TIMEOUT),
    (97, 10, "Guest agent not in sync: guest agent replied with wrong id to guest-sync",
     K.BAD_REPLY),
    (74, 10, "argument unsupported: QEMU guest agent is not configured", K.UNSUPPORTED),
    (84, 10, "Operation not supported: guest-ping", K.UNSUPPORTED),
    (68, 10, "Timed out during operation: cannot acquire state change lock (held by "
             "agent=remoteDispatchDomainFSFreeze)", K.AGENT_BUSY),
    (1, 10, "internal error: unable to execute QEMU agent command 'guest-exec': Command "
            "guest-exec has been disabled: the agent is in frozen state", K.COMMAND_DISABLED),
    (1, 10, "internal error: something else", K.COMMAND_FAILED),
    (9, 10, "operation failed: whatever", K.OTHER),
    (0, 0, "", K.OTHER),
])
def test_classify(code, domain, message, expected):
    assert classify(code, domain, message) is expected


def test_classify_ignores_case_and_survives_none_message():
    assert classify(86, 10, "QEMU GUEST AGENT IS NOT CONNECTED") is K.AGENT_NOT_CONNECTED
    assert classify(86, 10, None) is K.AGENT_TIMEOUT


@pytest.mark.parametrize("desc,expected", [
    ("Command guest-exec has been disabled", K.COMMAND_DISABLED),
    ("The command guest-file-open has been disabled for this instance", K.COMMAND_DISABLED),
    ("The command guest-foo has not been found", K.COMMAND_NOT_FOUND),
    ("COMMAND GUEST-EXEC HAS BEEN DISABLED", K.COMMAND_DISABLED),
    ("Invalid parameter 'pid'", K.COMMAND_FAILED),
    ("", K.COMMAND_FAILED),
    (None, K.COMMAND_FAILED),
])
def test_agent_reply_error_kind(desc, expected):
    assert agent_reply_error_kind(desc) is expected


AGENT_ANSWERS = [r for r in RECORDED if r[1] == errors.VIR_ERR_INTERNAL_ERROR
                 and "cannot parse json" not in r[3].lower()]


@pytest.mark.parametrize("case_id,code,domain,message", AGENT_ANSWERS,
                         ids=[r[0] for r in AGENT_ANSWERS])
def test_agent_answers_are_named_alike_in_replies_and_libvirt_errors(case_id, code, domain,
                                                                     message):
    # libvirt wraps the agent's error desc in an internal error; the same
    # desc in a reply's "error" member must get the same kind.
    assert agent_reply_error_kind(message) is classify(code, domain, message)


ERROR_NUMBERS = [n for n in dir(errors) if n.startswith(("VIR_ERR_", "VIR_FROM_"))]


IN_BINDING = [n for n in ERROR_NUMBERS if hasattr(libvirt, n)]
NEWER_THAN_BINDING = [n for n in ERROR_NUMBERS if not hasattr(libvirt, n)]


@pytest.mark.parametrize("name", IN_BINDING)
def test_error_numbers_match_libvirt(name):
    assert getattr(errors, name) == getattr(libvirt, name)


@pytest.mark.parametrize("name", NEWER_THAN_BINDING)
def test_numbers_the_binding_lacks_are_newer_than_all_it_has(name):
    assert name.startswith("VIR_ERR_AGENT_COMMAND_")
    known = [getattr(libvirt, n) for n in dir(libvirt)
             if n.startswith("VIR_ERR_") and not n.endswith("_LAST")]
    assert getattr(errors, name) > max(known)


@pytest.mark.parametrize("code, message, kind", [
    # libvirt after 9.0: agent calls report their own codes
    (112, "Guest agent timeout while executing command", K.AGENT_TIMEOUT),
    (113, "internal error: unable to execute QEMU agent command 'guest-exec': "
          "Command guest-exec has been disabled", K.COMMAND_DISABLED),
    (113, "unable to execute QEMU agent command 'x': Command x has not been found",
     K.COMMAND_NOT_FOUND),
    (113, "unable to execute QEMU agent command 'guest-exec': Failed to execute",
     K.COMMAND_FAILED),
    # the agent went away mid-call: absent (graced), not hung
    (86, "Guest agent disappeared while executing command", K.AGENT_NOT_CONNECTED),
    (113, "Guest agent disappeared while executing command", K.AGENT_NOT_CONNECTED),
    (86, "Guest agent is not responding: Guest agent not available for now",
     K.AGENT_TIMEOUT),
    # libvirtd could not carry a huge reply (seen on the testbed with a
    # check writing 3.2 MB): the connection is fine, the verdict unknown
    (39, "internal error: Unable to encode message payload", K.REPLY_TOO_LARGE),
])
def test_agent_error_codes_old_and_new(code, message, kind):
    assert classify(code, 10, message) is kind


NOT_RUNNING = [s for s in DomainState if s is not DomainState.RUNNING]


@pytest.mark.parametrize("kind,state", list(itertools.product(ErrorKind, NOT_RUNNING)))
def test_verdict_is_unknown_whenever_the_domain_is_not_running(kind, state):
    result = verdict_for(kind, state)
    assert result.verdict is Verdict.UNKNOWN
    assert state.value in result.reason


RUNNING_VERDICTS = {
    K.AGENT_TIMEOUT: Verdict.FAILED,
    K.AGENT_NOT_CONNECTED: Verdict.FAILED,
    K.BAD_REPLY: Verdict.FAILED,
    K.CONNECTION_LOST: Verdict.UNKNOWN,
    K.UNSUPPORTED: Verdict.UNKNOWN,
    K.COMMAND_DISABLED: Verdict.UNKNOWN,
    K.COMMAND_NOT_FOUND: Verdict.UNKNOWN,
    K.COMMAND_FAILED: Verdict.UNKNOWN,
    K.NO_DOMAIN: Verdict.UNKNOWN,
    K.DOMAIN_NOT_RUNNING: Verdict.UNKNOWN,
    K.AGENT_BUSY: Verdict.UNKNOWN,
    K.REPLY_TOO_LARGE: Verdict.UNKNOWN,
    K.OTHER: Verdict.UNKNOWN,
}


def test_every_error_kind_has_a_verdict_row():
    assert set(RUNNING_VERDICTS) == set(ErrorKind)


@pytest.mark.parametrize("kind,expected", list(RUNNING_VERDICTS.items()))
def test_verdict_while_running(kind, expected):
    result = verdict_for(kind, DomainState.RUNNING)
    assert result.verdict is expected
    assert result.reason and "\n" not in result.reason
    assert not result.reset_requested


@pytest.mark.parametrize("case_id,code,domain,message", RECORDED,
                         ids=[r[0] for r in RECORDED])
def test_recorded_situations_end_in_one_line_reasons(case_id, code, domain, message):
    result = verdict_for(classify(code, domain, message), DomainState.RUNNING, message)
    assert "\n" not in result.reason
    assert len(result.reason) < 450


def test_detail_is_appended_on_one_line():
    message = hv_recorded.load()["failures"]["malformed_json"]["err"]["msg"]
    assert "\n" in message
    result = verdict_for(K.BAD_REPLY, DomainState.RUNNING, message)
    assert result.reason.startswith("guest agent sent a reply that cannot be read (")
    assert "cannot parse json" in result.reason
    assert "\n" not in result.reason
