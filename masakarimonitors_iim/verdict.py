"""The words every room uses to talk about a guest's health.

Kept in one small module with no I/O so the probes, the journal and the
status output agree on them without importing each other.
"""
from __future__ import annotations

import dataclasses
import enum

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor.types import DomainState, ErrorKind


class Verdict(str, enum.Enum):
    """Outcome of one probe round for one domain.

    UNKNOWN is deliberately separate from FAILED: a paused, migrating or
    unreachable domain tells us nothing about the guest, and counting it
    as a failure would restart healthy VMs.
    """

    HEALTHY = "HEALTHY"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What a probe concluded, and why, in words an operator can read.

    ``reset_requested`` is set when the guest itself asked for recovery
    (an application-requested reset); the journal then reports at once
    instead of waiting for the failure threshold.

    ``agent_only`` is set on a FAILED result that rests only on the agent
    not answering (ping or any call timing out or finding no agent), with
    no application probe failing: a silent agent is weaker evidence than a
    failed check, so the activity guard may ask the hypervisor whether the
    guest is still doing I/O before such a failure is reported.
    """

    verdict: Verdict
    reason: str = ""
    reset_requested: bool = False
    agent_only: bool = False

    @classmethod
    def healthy(cls, reason: str = "") -> "ProbeResult":
        return cls(Verdict.HEALTHY, reason)

    @classmethod
    def failed(cls, reason: str) -> "ProbeResult":
        return cls(Verdict.FAILED, reason)

    @classmethod
    def unknown(cls, reason: str) -> "ProbeResult":
        return cls(Verdict.UNKNOWN, reason)


def combine(results: list[ProbeResult]) -> ProbeResult:
    """Fold several probes' results for one domain into one verdict.

    Any FAILED wins: the application is down even if the agent answers.
    Otherwise one HEALTHY probe makes the round HEALTHY, so a probe that
    cannot tell (its RPC blocked, its heartbeat not written yet) never
    hides what the others see: were UNKNOWN to win here, a guest whose
    exec probe is blocked would never leave discovery and its ping
    failures would never count. Only all-UNKNOWN is UNKNOWN. Reasons of
    every probe that did not say HEALTHY are kept; a reset request from
    any probe is kept.
    """
    if not results:
        return ProbeResult.unknown("no probe ran")
    reset = any(r.reset_requested for r in results)
    if any(r.verdict is Verdict.FAILED for r in results):
        verdict = Verdict.FAILED
        shown = [r for r in results if r.verdict is Verdict.FAILED]
    elif any(r.verdict is Verdict.HEALTHY for r in results):
        verdict = Verdict.HEALTHY
        shown = [r for r in results if r.verdict is Verdict.UNKNOWN]
    else:
        verdict = Verdict.UNKNOWN
        shown = results
    return ProbeResult(verdict, "; ".join(r.reason for r in shown if r.reason), reset)


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
    ErrorKind.REPLY_TOO_LARGE:
        "the guest's reply is larger than libvirt can carry (a check printing "
        "megabytes?), guest health unknown",
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


def _with_detail(reason: str, detail: str) -> str:
    detail = one_line(detail)
    return "%s (%s)" % (reason, detail) if detail else reason
