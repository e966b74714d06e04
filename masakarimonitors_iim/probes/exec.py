"""exec: run an operator-written check command inside the guest.

The command is started with guest-exec as an argv list (no shell unless
the operator writes one, e.g. ``["/bin/sh", "-c", "..."]``) and followed
with guest-exec-status until it exits or its deadline passes. It is
judged (:mod:`.exec_judge`) by its exit code and, optionally, an RE2
regular expression searched in the first ``max_output`` bytes of stdout.

Decisions worth knowing:

* Deadline: ``timeout`` (seconds) if given, else the round's timeout
  minus a reserve of min(1 s, 20 %) kept for the kill. A command still
  running at its deadline is killed in the guest with ``kill_command``
  (its pid appended) and the round is FAILED: the check hung.
* A ``timeout`` longer than the round's is allowed: the command keeps
  running across rounds, rounds in between report UNKNOWN ("still
  running"), and the result is judged when it exits. Nothing new is
  started while a command is pending, so checks never pile up in the
  guest, not even when its status cannot be read.
* Only watched time counts against ``timeout``: the time between two
  status replies in the same round. Time between rounds is not counted,
  so a paused domain, an absent agent or a stalled monitor can never get
  a command killed for time the guest was frozen, and every round still
  brings a hung command closer to its kill. A command spanning rounds
  therefore gets somewhat more wall-clock time than ``timeout``.
* guest-exec blocked by the guest's agent policy is UNKNOWN, never
  FAILED. guest-exec refused for another reason (program missing,
  permission denied) is UNKNOWN by default, because restarting the VM
  cannot fix a check that cannot start; ``on_spawn_error: failed``
  makes it FAILED for operators who know the program is always there
  (then a failure to start means a broken guest filesystem).
* Kill safety: a pid is only killed right after guest-exec-status said
  it has not exited; qemu-ga reaps its children, so killing a pid it
  already reported as exited could hit an unrelated process reusing it.

The pids to remember until qemu-ga reports them exited (the check
command, the kill helpers) are kept by :mod:`.exec_pending`.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor.types import AgentChannel, AgentError, ErrorKind
from masakarimonitors_iim.probes import _params, capabilities, exec_judge
from masakarimonitors_iim.probes.base import (
    CLEANUP_CALL_TIMEOUT,
    Deadline,
    Probe,
)
from masakarimonitors_iim.probes.exec_pending import KillHelpers, Pending, reply_pid
from masakarimonitors_iim.verdict import ProbeResult

LOG = logging.getLogger(__name__)

NAME = "exec"
KNOWN = {"command", "timeout", "expect_exit", "stdout_regex", "max_output",
         "kill_command", "on_spawn_error"}
DEFAULT_KILL = ["/bin/kill", "-KILL"]
EXAMPLE = "['/usr/local/bin/check-app', '--quick']"

POLL_FIRST = 0.05   # first guest-exec-status poll after this many seconds
POLL_MAX = 0.5      # then doubling up to this


class ExecProbe(Probe):
    name = NAME

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        p = self.params
        _params.reject_unknown(NAME, p, KNOWN)
        self.command = _params.argv(NAME, p, "command", None, EXAMPLE)
        self.timeout = _params.number(NAME, p, "timeout", None, 0.1, 3600)
        self.expect_exit = exec_judge.exit_codes(p.get("expect_exit", 0))
        self.stdout_regex = exec_judge.compile_pattern(p.get("stdout_regex"))
        self.max_output = _params.integer(NAME, p, "max_output", 4096, 1, 1024 * 1024)
        self.kill_command = _params.argv(NAME, p, "kill_command", DEFAULT_KILL,
                                         "['/bin/kill', '-KILL']")
        self.on_spawn_error = _params.choice(NAME, p, "on_spawn_error", "unknown",
                                             ("unknown", "failed"))
        self._shown = one_line(" ".join(self.command), 80)
        self.judge = exec_judge.Judge(self._shown, self.expect_exit, self.stdout_regex,
                                      self.max_output)
        self._pending: Pending | None = None
        self._helpers = KillHelpers(self.kill_command)
        # close() may come from another thread while a round runs; the
        # round then does the clean-up when it ends (see close()).
        self._lock = threading.Lock()
        self._closed = False
        self._close_agent: AgentChannel | None = None
        self._cleaned = False

    @classmethod
    def policy_notes(cls, params: Mapping[str, Any], interval: float,
                     timeout: float) -> list[str]:
        """A ``timeout`` beyond the round's is allowed (see the module
        docstring) but makes the rounds in between UNKNOWN: say so."""
        limit = params.get("timeout")
        if isinstance(limit, (int, float)) and limit > timeout:
            return ["probe 'exec' timeout %g s exceeds the round timeout %g s: the "
                    "command spans rounds and the rounds in between report UNKNOWN"
                    % (limit, timeout)]
        return []

    def required_commands(self) -> set[str]:
        return {"guest-exec", "guest-exec-status"}

    def run(self, agent: AgentChannel, timeout: float) -> ProbeResult:
        try:
            with self._lock:
                if self._closed:
                    return ProbeResult.unknown("probe closed")
                deadline = Deadline(timeout, self._clock)
                reserve = min(CLEANUP_CALL_TIMEOUT, 0.2 * timeout)
                result = self._round(agent, deadline, reserve)
                self._helpers.reap(agent, deadline)
                return result
        finally:
            self._cleanup_if_closed()

    def close(self, agent: AgentChannel | None) -> None:
        """Kill a command still running (after checking it still is) and
        reap what we can; the probe is not used again.

        Never waits for a round in flight on another thread: that round
        does the clean-up when it ends. Flag first, then try the lock, in
        both places, so one of the two always gets to clean up.
        """
        self._close_agent = agent
        self._closed = True
        self._cleanup_if_closed()

    def _cleanup_if_closed(self) -> None:
        if self._closed and self._lock.acquire(blocking=False):
            try:
                self._cleanup()
            finally:
                self._lock.release()

    def _cleanup(self) -> None:
        """Called with the lock held, at most once."""
        if self._cleaned:
            return
        self._cleaned = True
        agent = self._close_agent
        pending, self._pending = self._pending, None
        if agent is not None and pending is not None:
            try:
                status = agent.command("guest-exec-status", {"pid": pending.pid},
                                       CLEANUP_CALL_TIMEOUT)
                if isinstance(status, dict) and status.get("exited") is False:
                    self._helpers.kill(agent, pending.pid, CLEANUP_CALL_TIMEOUT)
            except AgentError as err:
                LOG.info("exec probe close: could not stop pid %d: %s",
                         pending.pid, one_line(str(err)))
        if agent is not None:
            self._helpers.reap(agent, Deadline(CLEANUP_CALL_TIMEOUT, self._clock))
        self._helpers.forget()

    # -- one round ---------------------------------------------------------

    def _round(self, agent: AgentChannel, deadline: Deadline, reserve: float) -> ProbeResult:
        if self._pending is not None:
            self._pending.last_seen = None   # the gap since last round is not watched
            result = self._follow(agent, deadline, reserve)
            if result is not None:
                return result
            # The previous command is gone (already judged, or unknown to
            # the agent): start a fresh one.
        result = self._spawn(agent, deadline, reserve)
        if result is not None:
            return result
        result = self._follow(agent, deadline, reserve)
        if result is None:
            return ProbeResult.unknown("check command %s vanished right after it was started"
                                       % self._shown)
        return result

    def _spawn(self, agent: AgentChannel, deadline: Deadline,
               reserve: float) -> ProbeResult | None:
        """Start the command; a result only when it could not start."""
        args = {"path": self.command[0], "arg": self.command[1:],
                "capture-output": self.stdout_regex is not None}
        try:
            reply = agent.command("guest-exec", args, deadline.call_timeout())
        except AgentError as err:
            if capabilities.is_blocked_error(err):
                return ProbeResult.unknown(
                    capabilities.runtime_blocked_reason(NAME, "guest-exec", err))
            if err.kind is ErrorKind.COMMAND_FAILED:
                reason = "cannot start check command %s: %s" % (self._shown,
                                                                 one_line(err.message))
                if self.on_spawn_error == "failed":
                    return ProbeResult.failed(reason)
                return ProbeResult.unknown(reason)
            raise
        pid = reply_pid(reply)
        if pid is None:
            return ProbeResult.unknown("malformed guest-exec reply: %s" % one_line(repr(reply)))
        now = self._clock()
        if self.timeout is not None:
            allowance = self.timeout
        else:
            allowance = max(0.0, deadline.end - reserve - now)
        self._pending = Pending(pid=pid, started=now, allowance=allowance, last_seen=now)
        return None

    def _follow(self, agent: AgentChannel, deadline: Deadline,
                reserve: float) -> ProbeResult | None:
        """Poll the pending command until it exits, its deadline passes or
        the round's budget runs out. None: nothing to report about it."""
        p = self._pending
        assert p is not None
        delay = POLL_FIRST
        while True:
            try:
                status = agent.command("guest-exec-status", {"pid": p.pid},
                                       deadline.call_timeout())
            except AgentError as err:
                if capabilities.is_blocked_error(err):
                    # Keep the pid: starting commands we cannot follow
                    # would pile them up in the guest.
                    return ProbeResult.unknown(
                        capabilities.runtime_blocked_reason(NAME, "guest-exec-status", err))
                if err.kind is ErrorKind.COMMAND_FAILED:
                    # qemu-ga restarted or the guest rebooted: the pid is
                    # no longer one of its children.
                    LOG.info("guest agent no longer knows check pid %d: %s",
                             p.pid, one_line(err.message))
                    self._pending = None
                    return None
                raise
            if not isinstance(status, dict) or not isinstance(status.get("exited"), bool):
                return ProbeResult.unknown("malformed guest-exec-status reply: %s"
                                           % one_line(repr(status)))
            now = self._clock()
            if status["exited"]:
                self._pending = None
                if p.kills:
                    return None
                return self.judge.judge(status, now - p.started)
            if p.kills:
                return self._kill(agent, p, deadline, now)
            if p.last_seen is not None:
                p.watched += now - p.last_seen
            p.last_seen = now
            left = p.allowance - p.watched
            if left <= 1e-6:
                return self._kill(agent, p, deadline, now)
            room = deadline.remaining() - reserve
            if room <= 1e-6:
                return ProbeResult.unknown(
                    "check command %s still running after %.1f s (allowed %.1f s); "
                    "judged in a later round" % (self._shown, p.watched, p.allowance))
            self._sleep(min(delay, room, left))
            delay = min(delay * 2, POLL_MAX)

    def _kill(self, agent: AgentChannel, p: Pending, deadline: Deadline,
              now: float) -> ProbeResult:
        again = p.kills > 0
        p.kills += 1
        try:
            self._helpers.kill(agent, p.pid, deadline.call_timeout(floor=0.5))
            note = "kill issued (%s %d)" % (one_line(" ".join(self.kill_command), 60), p.pid)
        except AgentError as err:
            note = "kill failed: %s" % one_line(str(err))
        if again:
            return ProbeResult.failed("check command %s (pid %d) still running %.0f s after "
                                      "it was started despite %d earlier kill(s); %s"
                                      % (self._shown, p.pid, now - p.started, p.kills - 1,
                                         note))
        return ProbeResult.failed("check command %s did not finish within %.1f s; %s"
                                  % (self._shown, p.allowance, note))
