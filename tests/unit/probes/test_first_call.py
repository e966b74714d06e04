"""The round's first agent call: when it is cut short, and what a cut
call means (probes/first_call.py)."""
import pytest

from masakarimonitors_iim.hypervisor.types import AgentError, ErrorKind
from masakarimonitors_iim.probes import first_call
from masakarimonitors_iim.probes.first_call import FirstCall, Unanswered


class Agent:
    """Records each call's timeout; answers, or raises ``error``, after
    ``latency`` seconds of the test clock."""

    domain_uuid = "u"

    def __init__(self, clock, error=None, latency=0.003):
        self.clock = clock
        self.error = error
        self.latency = latency
        self.calls = []

    def command(self, name, arguments=None, timeout=2.0):
        self.calls.append((name, timeout))
        self.clock.t += self.latency
        if self.error is not None:
            raise AgentError(self.error, "fake %s" % self.error.value)
        return {}


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("last_answer, timeout, quick", [
    (0.003, 2.0, True),       # fast last time: cut short
    (0.49, 2.0, True),
    (0.5, 2.0, False),        # slow but alive: keeps the full timeout
    (1.7, 5.0, False),
    (None, 2.0, False),       # no answer last time (or never asked)
    (0.003, 1.0, False),      # nothing to cut: libvirt's shortest already
    (0.003, 1.5, True),
])
def test_may_be_quick(last_answer, timeout, quick):
    assert first_call.may_be_quick(last_answer, timeout) is quick


@pytest.mark.parametrize("quick, command, timeout, sent", [
    (True, "guest-ping", 2.0, 1.0),
    (True, "guest-info", 5.0, 1.0),
    (True, "guest-exec", 2.0, 2.0),          # starts a process: never cut
    (True, "guest-file-open", 2.0, 2.0),
    (True, "guest-ping", 1.0, 1.0),
    (False, "guest-ping", 2.0, 2.0),
])
def test_only_a_quick_read_only_first_call_is_cut_short(quick, command, timeout, sent):
    clock = Clock()
    agent = Agent(clock)
    channel = FirstCall(agent, quick, clock)
    channel.command(command, None, timeout)
    channel.command("guest-ping", None, timeout)
    assert agent.calls == [(command, sent), ("guest-ping", timeout)]


def test_a_cut_call_not_answered_is_unanswered_not_a_failure():
    clock = Clock()
    channel = FirstCall(Agent(clock, ErrorKind.AGENT_TIMEOUT, latency=1.0), True, clock)
    with pytest.raises(Unanswered) as raised:
        channel.command("guest-ping", None, 2.0)
    assert not isinstance(raised.value, AgentError)   # probes never catch it
    assert "1s" in str(raised.value) and "(2s)" in str(raised.value)
    assert channel.seconds is None


@pytest.mark.parametrize("quick, error, seconds", [
    (False, ErrorKind.AGENT_TIMEOUT, None),        # a full-timeout failure stays a failure
    (True, ErrorKind.AGENT_NOT_CONNECTED, None),
    (True, ErrorKind.CONNECTION_LOST, None),
    (True, ErrorKind.COMMAND_DISABLED, 0.25),      # the agent answered, with an error
    (True, ErrorKind.COMMAND_FAILED, 0.25),
])
def test_other_failures_pass_through_and_only_agent_replies_are_timed(quick, error, seconds):
    clock = Clock()
    channel = FirstCall(Agent(clock, error, latency=0.25), quick, clock)
    with pytest.raises(AgentError) as raised:
        channel.command("guest-ping", None, 2.0)
    assert raised.value.kind is error
    assert channel.seconds == seconds


def test_the_first_answer_is_timed_and_later_calls_are_not():
    clock = Clock()
    agent = Agent(clock, latency=0.25)
    channel = FirstCall(agent, True, clock)
    channel.command("guest-ping", None, 2.0)
    agent.latency = 3.0
    channel.command("guest-exec", None, 2.0)
    assert channel.seconds == 0.25
