"""Turn libvirt's errors into verdicts, without touching libvirt.

libvirt reports every agent problem as a (code, domain, message) triple and
uses the same code for situations that must be judged differently (code 86
is both "agent not connected" and "agent hung"), so the message matters.
Both functions here are pure so the whole mapping is a table in the tests.

The error numbers are libvirt's stable ABI (virErrorNumber); they are
spelled out here so the scheduler can import ``verdict_for`` without
importing libvirt. A unit test checks them against the libvirt module.
"""
from __future__ import annotations

from masakarimonitors_iim.hypervisor.types import DomainState, ErrorKind
from masakarimonitors_iim.verdict import ProbeResult

# virErrorNumber values used below.
VIR_ERR_INTERNAL_ERROR = 1
VIR_ERR_NO_SUPPORT = 3
VIR_ERR_NO_CONNECT = 5
VIR_ERR_INVALID_CONN = 6
VIR_ERR_SYSTEM_ERROR = 38
VIR_ERR_RPC = 39
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_OPERATION_TIMEOUT = 68
VIR_ERR_ARGUMENT_UNSUPPORTED = 74
VIR_ERR_OPERATION_UNSUPPORTED = 84
VIR_ERR_AGENT_UNRESPONSIVE = 86
VIR_ERR_AGENT_UNSYNCED = 97

# virErrorDomain values: errors raised by the client-side transport.
VIR_FROM_RPC = 7
VIR_FROM_REMOTE = 13

# Message fragments (lower case) that mean the client lost libvirtd,
# whatever code the transport chose to report them with.
_CONNECTION_MESSAGES = (
    "client socket is closed",
    "end of file while reading data",
    "connection reset",
    "broken pipe",
    "keepalive timeout",
    "cannot recv data",
    "cannot write data",
    "failed to connect socket",
    "no connection driver available",
)

_CONNECTION_CODES = (VIR_ERR_NO_CONNECT, VIR_ERR_INVALID_CONN, VIR_ERR_RPC)
_UNSUPPORTED_CODES = (VIR_ERR_NO_SUPPORT, VIR_ERR_ARGUMENT_UNSUPPORTED,
                      VIR_ERR_OPERATION_UNSUPPORTED)


def classify(code: int, domain: int, message: str) -> ErrorKind:
    """Name the situation behind one libvirt error.

    Connection-level problems are recognised first because the transport
    reports some of them with generic codes (a closed socket is an
    INTERNAL_ERROR) that would otherwise look like an agent's answer.
    """
    msg = (message or "").lower()
    if code in _CONNECTION_CODES or any(m in msg for m in _CONNECTION_MESSAGES):
        return ErrorKind.CONNECTION_LOST
    if code == VIR_ERR_SYSTEM_ERROR and domain in (VIR_FROM_RPC, VIR_FROM_REMOTE):
        return ErrorKind.CONNECTION_LOST
    if code == VIR_ERR_AGENT_UNRESPONSIVE:
        # "QEMU guest agent is not connected" and "... not available due to
        # an error" (libvirt gave up on a broken channel) mean no agent to
        # talk to; everything else under 86 ("not available for now") is a
        # request that got no answer in time.
        if "not connected" in msg or "due to an error" in msg:
            return ErrorKind.AGENT_NOT_CONNECTED
        return ErrorKind.AGENT_TIMEOUT
    if code == VIR_ERR_AGENT_UNSYNCED:
        return ErrorKind.BAD_REPLY
    if code == VIR_ERR_OPERATION_INVALID:
        return ErrorKind.DOMAIN_NOT_RUNNING
    if code == VIR_ERR_NO_DOMAIN:
        return ErrorKind.NO_DOMAIN
    if code in _UNSUPPORTED_CODES:
        return ErrorKind.UNSUPPORTED
    if code == VIR_ERR_OPERATION_TIMEOUT:
        # "cannot acquire state change lock": another client (e.g. Nova's
        # fsfreeze during a snapshot) holds the domain's agent job.
        return ErrorKind.AGENT_BUSY
    if code == VIR_ERR_INTERNAL_ERROR:
        if "has been disabled" in msg:
            return ErrorKind.COMMAND_DISABLED
        if "has not been found" in msg:
            return ErrorKind.COMMAND_NOT_FOUND
        if "cannot parse json" in msg:
            return ErrorKind.BAD_REPLY
        return ErrorKind.COMMAND_FAILED
    return ErrorKind.OTHER


# What each kind means for the guest while the domain is RUNNING. Only
# these three say the guest itself is unwell; the journal ignores FAILED
# until a guest has been seen healthy once, so a booting guest whose agent
# is not up yet is not reported.
_FAILED_WHILE_RUNNING = {
    ErrorKind.AGENT_TIMEOUT: "guest agent did not answer in time: guest or agent hung",
    ErrorKind.AGENT_NOT_CONNECTED: "guest agent is not connected: agent stopped or guest not up",
    ErrorKind.BAD_REPLY: "guest agent sent a reply that cannot be read",
}

_UNKNOWN_REASONS = {
    ErrorKind.CONNECTION_LOST: "libvirt is unreachable, guest health unknown",
    ErrorKind.UNSUPPORTED: "this libvirt driver cannot talk to guest agents",
    ErrorKind.COMMAND_DISABLED:
        "guest agent refuses the command (blocked by qemu-ga policy or filesystems frozen)",
    ErrorKind.COMMAND_NOT_FOUND: "guest agent does not know the command (qemu-ga too old?)",
    ErrorKind.COMMAND_FAILED: "guest agent answered the command with an error",
    ErrorKind.NO_DOMAIN: "domain no longer exists",
    ErrorKind.DOMAIN_NOT_RUNNING: "domain is not running",
    ErrorKind.AGENT_BUSY: "guest agent is busy with another call, guest health unknown",
    ErrorKind.OTHER: "unexpected libvirt error, guest health unknown",
}


def verdict_for(kind: ErrorKind, state: DomainState, detail: str = "") -> ProbeResult:
    """Decide what a failed agent call says about the guest.

    ``state`` must be read *after* the failure: a guest paused or migrated
    while the call was in flight makes a timeout meaningless, and only a
    RUNNING domain's silence is evidence against the guest. ``detail``
    (usually ``str(AgentError)``) is appended to the reason for operators.
    """
    if state is not DomainState.RUNNING:
        reason = "domain is %s, guest health unknown" % state.value
        return ProbeResult.unknown(_with_detail(reason, detail))
    if kind in _FAILED_WHILE_RUNNING:
        return ProbeResult.failed(_with_detail(_FAILED_WHILE_RUNNING[kind], detail))
    reason = _UNKNOWN_REASONS.get(kind, _UNKNOWN_REASONS[ErrorKind.OTHER])
    return ProbeResult.unknown(_with_detail(reason, detail))


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a libvirt message to one bounded line: some carry the
    guest's raw reply, newlines and all."""
    # Agent error texts come from the guest: no control characters (ESC,
    # bidi overrides) may reach a terminal through a log or status line.
    printable = "".join(ch if ch.isprintable() else " " for ch in (text or ""))
    flat = " ".join(printable.split())
    if len(flat) > limit:
        flat = flat[:limit - 3] + "..."
    return flat


def _with_detail(reason: str, detail: str) -> str:
    detail = one_line(detail)
    return "%s (%s)" % (reason, detail) if detail else reason
