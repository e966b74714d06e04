"""A healthy guest's first agent call of a round, on a short leash.

Why. A guest that has just hung still looks healthy to the scheduler
until a round fails, so that round runs in the healthy lane and holds a
healthy-lane agent slot for the whole probe timeout. When many guests
hang at once (a storage stall, a bad image rolled out), those rounds
queue in front of guests that are fine, and their verdicts come late.
A healthy agent answers guest-ping in milliseconds (3 ms measured on the
testbed), so waiting the full timeout for the first call of a guest that
answered quickly last time buys nothing: after :data:`QUICK_TIMEOUT`
without an answer the round ends *unanswered*, counts no failure, and
the scheduler probes the guest again at once in the suspect lane with
the full timeout (see ``monitor/dispatch.py``). That second round
decides, with the patience the policy asks for.

The quick call is used only where it is harmless:

* only for commands that change nothing in the guest (asking twice is
  free); a guest-exec or guest-file-open is never cut short;
* only when the guest's last first call answered in well under the quick
  timeout (:func:`may_be_quick`): a guest whose agent is slow but alive
  keeps the full timeout instead of paying two calls every interval;
* only when the policy timeout is longer than the quick one.

Why 1 s: libvirt takes whole seconds, and 1 s is its shortest per-call
timeout. Measured on the testbed (libvirt 9.0, an agent frozen with
SIGSTOP after answering): guest-ping with a 1 s timeout on an agent
libvirt is in sync with ends after 1.00 s; the next call then waits for
a guest-sync bounded by the domain's agent response timeout, which the
hypervisor layer shortens as soon as a call times out (timeouts.py), so
the re-probe costs the policy timeout, not libvirt's 5 s.

The cost: the domain-wide agent timeout is shortened after a 1 s silence
now, where it took a silence of the whole policy timeout before, until
the re-probe's answer restores libvirt's default. An agent busy for more
than a second (say, with Nova's own fsfreeze) thus briefly gives Nova's
agent calls the policy timeout instead of libvirt's "as long as needed".
"""
from __future__ import annotations

import time
from typing import Any, Callable

from masakarimonitors_iim.hypervisor.types import AgentChannel, AgentError, ErrorKind

#: Seconds the first call of a healthy guest's round may take; libvirt's
#: shortest per-call timeout.
QUICK_TIMEOUT = 1.0

#: The guest's last first call answered within this: fast enough to try
#: the quick call again (a healthy agent takes milliseconds).
FAST_ANSWER = QUICK_TIMEOUT / 2

#: Commands that only read: a cut-short call that reached the agent late
#: did nothing the re-probe would repeat.
QUICK_COMMANDS = frozenset({"guest-ping", "guest-info"})


#: Failed calls the agent itself answered (with an error): it is there.
_AGENT_REPLIED = frozenset({ErrorKind.COMMAND_DISABLED, ErrorKind.COMMAND_NOT_FOUND,
                            ErrorKind.COMMAND_FAILED})


class Unanswered(Exception):
    """The quick first call got no answer: nothing is known yet."""


def may_be_quick(last_answer_seconds: float | None, timeout: float) -> bool:
    """Whether a healthy-lane round may cut its first call short: the
    agent answered the last round's first call fast, and the policy
    timeout leaves something to cut."""
    return (last_answer_seconds is not None and last_answer_seconds < FAST_ANSWER
            and timeout > QUICK_TIMEOUT)


class FirstCall:
    """An agent channel that times the round's first call and, when
    ``quick``, bounds it by :data:`QUICK_TIMEOUT` (read-only commands
    only); every later call goes through unchanged."""

    def __init__(self, agent: AgentChannel, quick: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._agent = agent
        self.domain_uuid = agent.domain_uuid
        self._quick = quick
        self._clock = clock
        self._done = False
        #: seconds the first call took when it was answered (an error reply
        #: is an answer too), None otherwise
        self.seconds: float | None = None

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 2.0) -> Any:
        if self._done:
            return self._agent.command(name, arguments, timeout)
        self._done = True
        short = self._quick and name in QUICK_COMMANDS and timeout > QUICK_TIMEOUT
        started = self._clock()
        try:
            reply = self._agent.command(name, arguments, QUICK_TIMEOUT if short else timeout)
        except AgentError as exc:
            if short and exc.kind is ErrorKind.AGENT_TIMEOUT:
                raise Unanswered("%s not answered within %gs; probing again with the "
                                 "policy timeout (%gs)" % (name, QUICK_TIMEOUT, timeout)
                                 ) from None
            if exc.kind in _AGENT_REPLIED:
                self.seconds = self._clock() - started
            raise
        self.seconds = self._clock() - started
        return reply
