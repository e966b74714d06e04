"""Name the situation behind a libvirt error, without touching libvirt.

libvirt reports every agent problem as a (code, domain, message) triple and
uses the same code for situations that must be judged differently (code 86
is both "agent not connected" and "agent hung"), so the message matters.
This is the one place that reads libvirt's codes and qemu-ga's wording;
it is pure, so the whole mapping is a table in the tests. What a kind
means for the guest's health is decided above the hypervisor layer
(:func:`masakarimonitors_iim.verdict.verdict_for`).

The error numbers are libvirt's stable ABI (virErrorNumber); they are
spelled out here so this module can be tested without importing libvirt.
A unit test checks them against the libvirt module.
"""
from __future__ import annotations

from masakarimonitors_iim.hypervisor.types import ErrorKind

# virErrorNumber values used below.
VIR_ERR_INTERNAL_ERROR = 1
VIR_ERR_NO_SUPPORT = 3
VIR_ERR_NO_CONNECT = 5
VIR_ERR_INVALID_ARG = 8
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
#: Newer than libvirt 9.0 (which reports both situations as 86), so older
#: bindings lack the names; the numbers are libvirt's stable ABI.
VIR_ERR_AGENT_COMMAND_TIMEOUT = 112
VIR_ERR_AGENT_COMMAND_FAILED = 113

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
    if "unable to encode message payload" in msg:
        # libvirtd could not fit the agent's reply (megabytes of a check's
        # output) into one RPC message. Reported as an RPC error, but the
        # connection is fine: treating it as lost would reconnect, and
        # disturb every domain's round, each time the check runs.
        return ErrorKind.REPLY_TOO_LARGE
    if code in _CONNECTION_CODES or any(m in msg for m in _CONNECTION_MESSAGES):
        return ErrorKind.CONNECTION_LOST
    if code == VIR_ERR_SYSTEM_ERROR and domain in (VIR_FROM_RPC, VIR_FROM_REMOTE):
        return ErrorKind.CONNECTION_LOST
    if code in (VIR_ERR_AGENT_UNRESPONSIVE, VIR_ERR_AGENT_COMMAND_FAILED) \
            and "disappeared" in msg:
        # "Guest agent disappeared while executing command": qemu-ga closed
        # its channel mid-call (guest shutting down or rebooting, agent
        # restarted), which is an absent agent, not a hung one; the
        # disconnect grace decides whether it counts.
        return ErrorKind.AGENT_NOT_CONNECTED
    if code == VIR_ERR_AGENT_UNRESPONSIVE:
        # "QEMU guest agent is not connected" and "... not available due to
        # an error" (libvirt gave up on a broken channel) mean no agent to
        # talk to; everything else under 86 ("not available for now") is a
        # request that got no answer in time.
        if "not connected" in msg or "due to an error" in msg:
            return ErrorKind.AGENT_NOT_CONNECTED
        return ErrorKind.AGENT_TIMEOUT
    if code == VIR_ERR_AGENT_COMMAND_TIMEOUT:
        return ErrorKind.AGENT_TIMEOUT
    if code == VIR_ERR_AGENT_COMMAND_FAILED:
        return agent_reply_error_kind(msg)
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
        # libvirt wraps the agent's own error reply in an internal error.
        kind = agent_reply_error_kind(msg)
        if kind is ErrorKind.COMMAND_FAILED and "cannot parse json" in msg:
            return ErrorKind.BAD_REPLY
        return kind
    return ErrorKind.OTHER


def agent_reply_error_kind(desc: str | None) -> ErrorKind:
    """Name an error the agent itself answered with (its ``desc``).

    The same words reach us two ways: wrapped by libvirt in an internal
    error, or as the ``error`` member of a reply; both must be named
    alike. qemu-ga says "The command X has been disabled for this
    instance" (older) or "Command X has been disabled" (newer).
    """
    msg = (desc or "").lower()
    if "has been disabled" in msg:
        return ErrorKind.COMMAND_DISABLED
    if "has not been found" in msg:
        return ErrorKind.COMMAND_NOT_FOUND
    return ErrorKind.COMMAND_FAILED
