"""Which agent RPCs a guest lets us use, and what to say when it does not.

A guest administrator may block RPCs in qemu-ga (``--block-rpcs`` /
``--allow-rpcs``), and older agents lack newer ones. Neither says anything
about the application's health, so a probe that needs such an RPC must
report UNKNOWN with the reason, never FAILED: a FAILED here would restart
a healthy VM every time, because recovery cannot change the guest's agent
configuration.

Two places use this: the prober at discovery (:func:`discover`, from
guest-info, before the probes ever run) and the probes themselves at run
time (the guest's policy can change when qemu-ga restarts, and discovery
may be stale).
"""
from __future__ import annotations

from typing import Any, Iterable

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor import errors
from masakarimonitors_iim.hypervisor.types import AgentChannel, AgentError, ErrorKind
from masakarimonitors_iim.probes.base import Probe
from masakarimonitors_iim.verdict import ProbeResult

def _commands(guest_info: Any) -> dict[str, bool] | None:
    """guest-info's ``supported_commands`` as name -> enabled, or None if
    the reply does not have that shape."""
    if not isinstance(guest_info, dict):
        return None
    listed = guest_info.get("supported_commands")
    if not isinstance(listed, list):
        return None
    commands: dict[str, bool] = {}
    for entry in listed:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            # Only an explicit True counts as enabled: a malformed entry
            # must not make a blocked command look usable.
            commands[entry["name"]] = entry.get("enabled") is True
    return commands


def blocked_commands(required: set[str], guest_info: dict) -> set[str]:
    """The RPCs in ``required`` that the guest has disabled or lacks.

    A reply without a ``supported_commands`` list is not evidence of
    blocking, so it blocks nothing: the probe then runs and meets any
    block at run time, where it is also turned into UNKNOWN.
    """
    commands = _commands(guest_info)
    if commands is None:
        return set()
    return {name for name in required if not commands.get(name, False)}


def blocked_reason(probe_name: str, blocked: set[str], guest_info: dict) -> str:
    """One line for status: which RPCs, disabled or missing, and the fix."""
    commands = _commands(guest_info) or {}
    parts = []
    for name in sorted(blocked):
        if name in commands:
            parts.append("%s disabled" % name)
        else:
            parts.append("%s not supported" % name)
    version = guest_info.get("version") if isinstance(guest_info, dict) else None
    agent = "guest agent"
    if isinstance(version, str) and version:
        agent = "guest agent %s" % one_line(version, 40)
    return ("probe %r cannot run: %s has %s; enable them in qemu-ga "
            "(--block-rpcs/--allow-rpcs) or remove the probe from the policy"
            % (probe_name, agent, ", ".join(parts)))


#: guest-info refused this way says nothing about what the probes may use:
#: run them, they turn a blocked RPC into UNKNOWN themselves.
GUEST_INFO_REFUSED = {ErrorKind.COMMAND_DISABLED, ErrorKind.COMMAND_NOT_FOUND,
                      ErrorKind.COMMAND_FAILED}


def discover(agent: AgentChannel, probes: Iterable[Probe],
             timeout: float) -> dict[str, ProbeResult]:
    """Read guest-info once and return, for each probe the guest blocks,
    the UNKNOWN result to give instead of running it.

    Raises :class:`AgentError` when guest-info fails for a reason that
    says something about the guest (timeout, agent gone): the caller
    judges that like any failed call.
    """
    try:
        info = agent.command("guest-info", None, timeout)
    except AgentError as exc:
        if exc.kind not in GUEST_INFO_REFUSED:
            raise
        info = {}       # refused: nothing known to be blocked
    blocked = {}
    for probe in probes:
        result = check_probe(probe, info)
        if result is not None:
            blocked[probe.name] = result
    return blocked


def check_probe(probe: Probe, guest_info: dict) -> ProbeResult | None:
    """At discovery: the UNKNOWN result to report instead of running
    ``probe``, or None when the guest allows everything it needs."""
    blocked = blocked_commands(probe.required_commands(), guest_info)
    if not blocked:
        return None
    return ProbeResult.unknown(blocked_reason(probe.name, blocked, guest_info))


def _kind(err: AgentError) -> ErrorKind:
    """The error's kind, with a COMMAND_FAILED read again by the one rule
    for qemu-ga's wording, in case an error reached the probe classified
    only as COMMAND_FAILED."""
    if err.kind is ErrorKind.COMMAND_FAILED:
        return errors.agent_reply_error_kind(err.message)
    return err.kind


def is_blocked_error(err: AgentError) -> bool:
    """True when ``err`` says the RPC is disabled or unknown to the agent,
    rather than that the guest or the command misbehaved."""
    return _kind(err) in (ErrorKind.COMMAND_DISABLED, ErrorKind.COMMAND_NOT_FOUND)


def runtime_blocked_reason(probe_name: str, command: str, err: AgentError) -> str:
    """The reason a probe gives when it meets a blocked RPC while running."""
    if _kind(err) is ErrorKind.COMMAND_NOT_FOUND:
        return ("probe %r cannot run: guest agent does not support %s (too old?); "
                "upgrade qemu-ga or remove the probe from the policy" % (probe_name, command))
    # qemu-ga also disables most RPCs while filesystems are frozen for a
    # snapshot, so the fix is not always a configuration change.
    return ("probe %r cannot run: guest agent refuses %s (blocked by qemu-ga "
            "--block-rpcs/--allow-rpcs, or filesystems frozen); allow it or remove the "
            "probe from the policy" % (probe_name, command))
