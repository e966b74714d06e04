"""libvirt's numbers and replies -> the monitor's terms (hypervisor.translate), as tables."""
from __future__ import annotations

import hv_recorded
import libvirt
import pytest

from masakarimonitors_iim.hypervisor.translate import (
    agent_lifecycle_event,
    domain_state_from,
    failure_of,
    is_migration_job,
    lifecycle_event,
    parse_agent_reply,
)
from masakarimonitors_iim.hypervisor.types import (
    AgentError,
    DomainState,
    ErrorKind,
    EventKind,
    HypervisorUnavailable,
)


@pytest.mark.parametrize("event,detail,expected", [
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_UPDATED,
     (EventKind.DEFINED, "updated")),
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
     (EventKind.STARTED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
     (EventKind.SUSPENDED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
     (EventKind.SUSPENDED, "ioerror")),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY,
     (EventKind.SUSPENDED, "postcopy")),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
     (EventKind.RESUMED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
     (EventKind.STOPPED, "failed")),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
     (EventKind.STOPPED, "migrated")),
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST,
     (EventKind.SHUTDOWN, "guest")),
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_HOST,
     (EventKind.SHUTDOWN, "host")),
    (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED_MEMORY,
     (EventKind.PMSUSPENDED, "memory")),
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED,
     (EventKind.CRASHED, "panicked")),
    (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED,
     (EventKind.UNDEFINED, "removed")),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, 99, (EventKind.STOPPED, "99")),
    (99, 0, None),
])
def test_lifecycle_event_table(event, detail, expected):
    translated = lifecycle_event(event, detail, "u", "n")
    if expected is None:
        assert translated is None
    else:
        assert (translated.kind, translated.detail) == expected
        assert (translated.uuid, translated.name) == ("u", "n")


@pytest.mark.parametrize("state,reason,expected", [
    (libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED,
     libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_CHANNEL,
     (EventKind.AGENT_CONNECTED, "channel")),
    (libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED,
     libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_DOMAIN_STARTED,
     (EventKind.AGENT_DISCONNECTED, "domain_started")),
    (libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED, 0,
     (EventKind.AGENT_DISCONNECTED, "unknown")),
    (3, 0, None),
])
def test_agent_lifecycle_event_table(state, reason, expected):
    translated = agent_lifecycle_event(state, reason, "u", "n")
    if expected is None:
        assert translated is None
    else:
        assert (translated.kind, translated.detail) == expected


R, P = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED


@pytest.mark.parametrize("state,reason,job,expected", [
    (R, libvirt.VIR_DOMAIN_RUNNING_BOOTED, False, DomainState.RUNNING),
    (R, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED, False, DomainState.RUNNING),  # recorded [1, 5]
    (R, libvirt.VIR_DOMAIN_RUNNING_MIGRATED, False, DomainState.RUNNING),  # arrived, done
    (R, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY, False, DomainState.MIGRATING),
    (R, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED, False, DomainState.MIGRATING),
    (R, libvirt.VIR_DOMAIN_RUNNING_BOOTED, True, DomainState.MIGRATING),
    (P, libvirt.VIR_DOMAIN_PAUSED_USER, False, DomainState.PAUSED),
    (P, libvirt.VIR_DOMAIN_PAUSED_IOERROR, False, DomainState.PAUSED),
    (P, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, False, DomainState.MIGRATING),
    (P, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, False, DomainState.MIGRATING),
    (P, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, False, DomainState.MIGRATING),
    (libvirt.VIR_DOMAIN_NOSTATE, 0, False, DomainState.NOSTATE),
    (libvirt.VIR_DOMAIN_BLOCKED, 0, False, DomainState.BLOCKED),
    (libvirt.VIR_DOMAIN_SHUTDOWN, 1, False, DomainState.SHUTDOWN),
    (libvirt.VIR_DOMAIN_SHUTOFF, 1, False, DomainState.SHUTOFF),
    (libvirt.VIR_DOMAIN_SHUTOFF, 1, True, DomainState.SHUTOFF),
    (libvirt.VIR_DOMAIN_CRASHED, 1, False, DomainState.CRASHED),
    (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, False, DomainState.PMSUSPENDED),
    (42, 0, False, DomainState.NOSTATE),
])
def test_domain_state_table(state, reason, job, expected):
    assert domain_state_from(state, reason, job) is expected


@pytest.mark.parametrize("stats,expected", [
    ({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
      libvirt.VIR_DOMAIN_JOB_OPERATION: libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN}, True),
    ({"type": libvirt.VIR_DOMAIN_JOB_NONE,
      libvirt.VIR_DOMAIN_JOB_OPERATION: libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT}, False),
    ({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
      libvirt.VIR_DOMAIN_JOB_OPERATION: libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP}, False),
    ({}, False),
])
def test_is_migration_job(stats, expected):
    assert is_migration_job(stats) is expected


@pytest.mark.parametrize("desc,kind", [
    ("nope", ErrorKind.COMMAND_FAILED),
    ("Command guest-exec has been disabled", ErrorKind.COMMAND_DISABLED),
    ("The command guest-exec has been disabled for this instance", ErrorKind.COMMAND_DISABLED),
    ("The command guest-foo has not been found", ErrorKind.COMMAND_NOT_FOUND),
])
def test_agent_error_replies_are_named_by_their_wording(desc, kind):
    reply = '{"error": {"class": "GenericError", "desc": "%s"}}' % desc
    with pytest.raises(AgentError) as info:
        parse_agent_reply("guest-exec", reply, 1024)
    assert info.value.kind is kind
    assert str(info.value) == "%s: guest-exec: %s" % (kind.value, desc)


def test_failure_reports_one_libvirt_error_both_ways():
    exc = hv_recorded.libvirt_error(86, 10, "Guest agent is not responding:\nQEMU guest "
                                            "agent is not connected")
    failure = failure_of(exc)
    assert (failure.kind, failure.code, failure.domain) == (ErrorKind.AGENT_NOT_CONNECTED, 86, 10)
    assert failure.message == ("Guest agent is not responding: QEMU guest agent is not "
                               "connected")
    error = failure.agent_error("guest-ping")
    assert (error.kind, error.code, error.domain) == (ErrorKind.AGENT_NOT_CONNECTED, 86, 10)
    assert str(error) == "agent-not-connected: guest-ping: " + failure.message
    unavailable = failure.unavailable("listing domains")
    assert isinstance(unavailable, HypervisorUnavailable)
    assert str(unavailable) == "listing domains failed: " + failure.message
