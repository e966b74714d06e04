"""Filesystems frozen in the guest: the refusal watch, the status call,
the reason, and what the scheduler keeps between rounds."""
from __future__ import annotations

from typing import Any

import pytest

from masakarimonitors_iim.hypervisor.types import (
    AgentError, DomainInfo, DomainState, ErrorKind)
from masakarimonitors_iim.monitor.domains import Watched
from masakarimonitors_iim.policy import model as policy_model
from masakarimonitors_iim.prober import CAPABILITY_RECHECK_ROUNDS, RoundOutcome
from masakarimonitors_iim.probes import freeze
from masakarimonitors_iim.verdict import ProbeResult

A = "11111111-1111-1111-1111-111111111111"
DISABLED_MSG = ("internal error: unable to execute QEMU agent command 'guest-exec': "
                "Command guest-exec has been disabled: the agent is in frozen state")


class Agent:
    domain_uuid = A

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def command(self, name: str, arguments: Any = None, timeout: float = 2.0) -> Any:
        if isinstance(self.reply, AgentError):
            raise self.reply
        return self.reply


@pytest.mark.parametrize("error, refused", [
    (AgentError(ErrorKind.COMMAND_DISABLED, DISABLED_MSG), True),
    # qemu-ga's wording, reached the probe classified only as failed
    (AgentError(ErrorKind.COMMAND_FAILED, DISABLED_MSG), True),
    (AgentError(ErrorKind.COMMAND_NOT_FOUND, "unknown command"), True),
    (AgentError(ErrorKind.AGENT_TIMEOUT, "timed out"), False),
    (AgentError(ErrorKind.COMMAND_FAILED, "No such file or directory"), False),
])
def test_refusal_watch(error, refused):
    watch = freeze.RefusalWatch(Agent(error))
    with pytest.raises(AgentError):
        watch.command("guest-exec")
    assert watch.refused is refused
    assert watch.domain_uuid == A


@pytest.mark.parametrize("reply, frozen", [
    ("frozen", True),
    ("thawed", False),
    ({}, False),
    (AgentError(ErrorKind.COMMAND_DISABLED, "disabled"), False),
    (AgentError(ErrorKind.AGENT_TIMEOUT, "timed out"), False),
])
def test_is_frozen(reply, frozen):
    assert freeze.is_frozen(Agent(reply), 2.0) is frozen


@pytest.mark.parametrize("since, now, expected", [
    (0.0, 3600.0, "frozen (fsfreeze) since 1970-01-01 01:00:00 UTC: probes"),
    (3600.0, 3642.0, "frozen (fsfreeze) since 1970-01-01 01:00:00 UTC: probes"),
    (3600.0, 3600.0 + 600, "since 1970-01-01 01:00:00 UTC: probes cannot run"),
    (3600.0, 3600.0 + 601, "since 1970-01-01 01:00:00 UTC, more than 600 s, never thawed"),
])
def test_frozen_reason(since, now, expected):
    assert expected in freeze.frozen_reason(since, now)


def test_frozen_reason_changes_once_per_freeze_not_every_round():
    """The journal writes a HEALTHY domain's record when its reason
    changes: a reason counting seconds cost a synced write every round
    for as long as the guest stayed frozen."""
    young = {freeze.frozen_reason(3600.0, 3600.0 + t) for t in (10, 20, 590, 600)}
    old = {freeze.frozen_reason(3600.0, 3600.0 + t) for t in (601, 700, 86400)}
    assert len(young) == 1 and len(old) == 1 and young != old


def watched() -> Watched:
    return Watched(info=DomainInfo(A, "vm-a", DomainState.RUNNING, True),
                   policy=policy_model.EffectivePolicy(
                       enabled=True, probes=(), interval=10, timeout=2, failure_threshold=3,
                       success_threshold=1, startup_grace=0))


def test_the_freeze_start_is_kept_until_the_agent_answers_thawed():
    w = watched()
    frozen = RoundOutcome(ProbeResult.unknown("frozen"), agent_answered=True, frozen=True)
    w.learn(frozen, 500.0)
    w.learn(frozen, 510.0)
    assert w.round_spec(120).frozen_since == 500.0
    w.learn(RoundOutcome(ProbeResult.unknown("libvirt down")), 520.0)   # no answer: unchanged
    assert w.frozen_since == 500.0
    w.learn(RoundOutcome(ProbeResult.healthy(), agent_answered=True), 530.0)
    assert w.round_spec(120).frozen_since == 0.0


def test_a_block_is_read_again_now_and_then_and_no_block_never():
    w = watched()
    blocked = {"exec": ProbeResult.unknown("guest-exec disabled")}
    w.learn(RoundOutcome(ProbeResult.healthy(), agent_answered=True, blocked=blocked), 0.0)
    rechecks = 0
    for _ in range(3 * (CAPABILITY_RECHECK_ROUNDS + 1)):   # N rounds, then one reading
        spec = w.round_spec(120)
        rechecks += spec.check_capabilities
        w.learn(RoundOutcome(ProbeResult.healthy(), agent_answered=True,
                             blocked=blocked if spec.check_capabilities else None), 0.0)
    assert rechecks == 3
    w = watched()
    w.learn(RoundOutcome(ProbeResult.healthy(), agent_answered=True, blocked={}), 0.0)
    for _ in range(3 * CAPABILITY_RECHECK_ROUNDS):
        assert not w.round_spec(120).check_capabilities
        w.learn(RoundOutcome(ProbeResult.healthy(), agent_answered=True), 0.0)
