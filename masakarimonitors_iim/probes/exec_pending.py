"""The processes an exec probe started in the guest and has not reaped.

qemu-ga keeps a record of every guest-exec child until guest-exec-status
reports it exited, and reaps the child itself. So the probe remembers
each pid until then: the check command (:class:`Pending`, across rounds,
so that checks never pile up in the guest) and the helpers it starts to
kill one (:class:`KillHelpers`), whose records would otherwise stay in
the agent forever. Both are used under the probe's lock only.
"""
from __future__ import annotations

import dataclasses

from masakarimonitors_iim.hypervisor.types import AgentChannel, AgentError, ErrorKind
from masakarimonitors_iim.probes import capabilities, exec_judge
from masakarimonitors_iim.probes.base import Deadline

MAX_ORPHANS = 16    # kill helpers still to reap with guest-exec-status


@dataclasses.dataclass
class Pending:
    """A command started in the guest and not yet reaped."""

    pid: int
    started: float              # host monotonic time it was started
    allowance: float            # seconds of watched time it may run
    watched: float = 0.0        # seconds we have seen it running
    last_seen: float | None = None  # last status reply this round (None: none yet)
    kills: int = 0              # kill attempts; >0 means its FAILED was reported


class KillHelpers:
    """Kill helpers (``kill_command`` with the pid appended) still to
    reap; at most :data:`MAX_ORPHANS` are remembered, so an agent that
    never reports them exited cannot grow the list without bound."""

    def __init__(self, kill_command: list[str]) -> None:
        self.kill_command = kill_command
        self._pids: list[int] = []

    def kill(self, agent: AgentChannel, pid: int, timeout: float) -> None:
        """Start the kill helper; raises the agent's error if it cannot."""
        argv = self.kill_command + [str(pid)]
        reply = agent.command("guest-exec", {"path": argv[0], "arg": argv[1:]}, timeout)
        kill_pid = reply_pid(reply)
        if kill_pid is not None and len(self._pids) < MAX_ORPHANS:
            self._pids.append(kill_pid)

    def reap(self, agent: AgentChannel, deadline: Deadline) -> None:
        """Collect kill helpers' exit status, or qemu-ga keeps their
        records forever. Best effort, only with time left in the round."""
        while self._pids and deadline.remaining() > 0:
            pid = self._pids[0]
            try:
                status = agent.command("guest-exec-status", {"pid": pid},
                                       deadline.call_timeout())
            except AgentError as err:
                if err.kind is not ErrorKind.COMMAND_FAILED \
                        and not capabilities.is_blocked_error(err):
                    return  # agent trouble: try again another round
            else:
                if not (isinstance(status, dict) and status.get("exited") is True):
                    return  # still running: try again another round
            self._pids.pop(0)

    def forget(self) -> None:
        """The probe is closed: nothing will reap them any more."""
        self._pids.clear()

    def __len__(self) -> int:
        return len(self._pids)


def reply_pid(reply: object) -> int | None:
    """The pid in a guest-exec reply, or None if the reply is malformed."""
    pid = reply.get("pid") if isinstance(reply, dict) else None
    return pid if exec_judge.is_int(pid) and pid > 0 else None
