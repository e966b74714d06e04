"""libvirt's numbers and replies in the monitor's terms, without state.

Everything here is a pure function of what libvirt handed over, so it is
tested as tables; the connection and the calls only move data through it.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import libvirt

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor import errors
from masakarimonitors_iim.hypervisor.types import (
    AgentError,
    DomainState,
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
    LifecycleEvent,
)

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PMSUSPENDED,
}

# (state, reason) pairs libvirt uses while a migration owns the guest.
_MIGRATION_REASONS = {
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED),
}

_MIGRATION_JOBS = (libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
                   libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN)

_LIFECYCLE_KINDS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: EventKind.DEFINED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: EventKind.UNDEFINED,
    libvirt.VIR_DOMAIN_EVENT_STARTED: EventKind.STARTED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: EventKind.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: EventKind.RESUMED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: EventKind.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: EventKind.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: EventKind.PMSUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: EventKind.CRASHED,
}


def _constant_names(prefix: str) -> dict[int, str]:
    """{value: lower-case suffix} for libvirt constants named prefix*, so
    event details read "migrated" instead of 1."""
    return {getattr(libvirt, name): name[len(prefix):].lower()
            for name in dir(libvirt)
            if name.startswith(prefix) and not name.endswith("_LAST")}


# EventKind's lifecycle members are named after libvirt's events, so
# SUSPENDED's details are the VIR_DOMAIN_EVENT_SUSPENDED_* constants.
_DETAIL_NAMES = {
    event: _constant_names("VIR_DOMAIN_EVENT_%s_" % kind.name)
    for event, kind in _LIFECYCLE_KINDS.items()
}
_AGENT_REASONS = _constant_names("VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_")
_CLOSE_REASONS = _constant_names("VIR_CONNECT_CLOSE_REASON_")


def domain_state_from(state: int, reason: int, migration_job: bool = False) -> DomainState:
    """Map libvirt's (state, reason) to DomainState.

    libvirt has no "migrating" state: it shows a migration as RUNNING or
    PAUSED with a migration reason, and during pre-copy the source stays
    RUNNING with its old reason, which only the job (``migration_job``)
    reveals.
    """
    if (state, reason) in _MIGRATION_REASONS:
        return DomainState.MIGRATING
    if migration_job and state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
        return DomainState.MIGRATING
    return _STATES.get(state, DomainState.NOSTATE)


def is_migration_job(stats: dict[Any, Any]) -> bool:
    """Whether virDomainGetJobStats describes a running migration (a
    snapshot or dump job must not hide the guest's real state)."""
    return (stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE
            and stats.get(libvirt.VIR_DOMAIN_JOB_OPERATION) in _MIGRATION_JOBS)


def lifecycle_event(event: int, detail: int, uuid: str, name: str) -> LifecycleEvent | None:
    """Translate VIR_DOMAIN_EVENT_ID_LIFECYCLE; None for event types this
    libvirt is newer than."""
    kind = _LIFECYCLE_KINDS.get(event)
    if kind is None:
        return None
    detail_name = _DETAIL_NAMES[event].get(detail, str(detail))
    return LifecycleEvent(kind, uuid, name, detail_name)


def agent_lifecycle_event(state: int, reason: int, uuid: str, name: str) -> LifecycleEvent | None:
    """Translate VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE (qemu-ga opened or
    closed its end of the channel)."""
    if state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED:
        kind = EventKind.AGENT_CONNECTED
    elif state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED:
        kind = EventKind.AGENT_DISCONNECTED
    else:
        return None
    return LifecycleEvent(kind, uuid, name, _AGENT_REASONS.get(reason, str(reason)))


def close_reason(reason: int) -> str:
    """Name a VIR_CONNECT_CLOSE_REASON_* for the log ("eof", "keepalive")."""
    return _CLOSE_REASONS.get(reason, str(reason))


def error_parts(exc: libvirt.libvirtError) -> tuple[int, int, str]:
    """(code, domain, one-line message): a libvirt message may quote the
    guest, so it is cleaned before anyone logs it."""
    code = exc.get_error_code() or 0
    domain = exc.get_error_domain() or 0
    message = exc.get_error_message() or str(exc)
    return code, domain, one_line(message)


@dataclasses.dataclass(frozen=True)
class Failure:
    """One libvirt error, named; how a caller reports it depends on what
    it was doing, so the two report forms are built from the same facts."""

    kind: ErrorKind
    code: int
    domain: int
    message: str

    def unavailable(self, doing: str) -> HypervisorUnavailable:
        return HypervisorUnavailable("%s failed: %s" % (doing, self.message))

    def agent_error(self, command: str) -> AgentError:
        return AgentError(self.kind, "%s: %s" % (command, self.message),
                          self.code, self.domain)


def failure_of(exc: libvirt.libvirtError) -> Failure:
    code, domain, message = error_parts(exc)
    return Failure(errors.classify(code, domain, message), code, domain, message)


def parse_agent_reply(command: str, reply: str | None, max_bytes: int) -> Any:
    """The ``return`` member of a qemu-ga reply, or AgentError.

    The reply comes from inside the guest: its size is capped before it
    is parsed, and an ``error`` member is named by the same wording rules
    as the errors libvirt wraps (:func:`errors.agent_reply_error_kind`).
    """
    if reply is None:
        raise AgentError(ErrorKind.BAD_REPLY, "%s: empty reply" % command)
    size = len(reply.encode("utf-8", "replace"))
    if size > max_bytes:
        raise AgentError(ErrorKind.BAD_REPLY, "%s: reply of %d bytes exceeds the %d-byte "
                         "limit" % (command, size, max_bytes))
    try:
        parsed = json.loads(reply)
    except ValueError as exc:
        raise AgentError(ErrorKind.BAD_REPLY,
                         "%s: reply is not JSON: %s" % (command, exc)) from None
    if isinstance(parsed, dict) and "return" in parsed:
        return parsed["return"]
    if isinstance(parsed, dict) and "error" in parsed:
        error = parsed["error"]
        desc = one_line(str(error.get("desc", error) if isinstance(error, dict) else error))
        raise AgentError(errors.agent_reply_error_kind(desc), "%s: %s" % (command, desc))
    raise AgentError(ErrorKind.BAD_REPLY,
                     "%s: reply has no 'return' member: %s" % (command, one_line(reply, 120)))
