"""The exec probe's guest-process bookkeeping: pids read from guest-exec
replies, and kill helpers kept until qemu-ga reports them exited."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.probes.base import Deadline
from masakarimonitors_iim.probes.exec_pending import MAX_ORPHANS, KillHelpers, reply_pid


@pytest.mark.parametrize("reply, want", [
    ({"pid": 311}, 311),
    ({"pid": 1}, 1),
    ({"pid": 0}, None),
    ({"pid": -4}, None),
    ({"pid": True}, None),        # JSON true is not pid 1
    ({"pid": "311"}, None),
    ({"pid": 3.0}, None),
    ({}, None),
    (None, None),
    ([311], None),
])
def test_reply_pid(reply, want):
    assert reply_pid(reply) == want


def started(agent, helpers, n):
    """``n`` kill helpers started, pids 500, 501, ..."""
    pids = iter(range(500, 500 + n))
    agent.script("guest-exec", lambda args: {"pid": next(pids)})
    for target in range(n):
        helpers.kill(agent, 1000 + target, 1.0)


def test_kill_runs_the_kill_command_with_the_pid_appended(agent):
    helpers = KillHelpers(["/usr/bin/pkill", "-TERM", "-P"])
    started(agent, helpers, 1)
    assert agent.calls_to("guest-exec") == [{"path": "/usr/bin/pkill",
                                             "arg": ["-TERM", "-P", "1000"]}]
    assert len(helpers) == 1


def test_a_malformed_kill_reply_leaves_nothing_to_reap(agent):
    helpers = KillHelpers(["/bin/kill", "-KILL"])
    agent.script("guest-exec", {"pid": "x"})
    helpers.kill(agent, 1000, 1.0)
    assert len(helpers) == 0


def test_at_most_max_orphans_are_remembered(agent):
    helpers = KillHelpers(["/bin/kill", "-KILL"])
    started(agent, helpers, MAX_ORPHANS + 5)
    assert len(helpers) == MAX_ORPHANS


@pytest.mark.parametrize("status_reply, left", [
    ({"exited": True, "exitcode": 0}, 0),       # reaped
    ({"exited": False}, 2),                     # still running: kept, stop for this round
    ({"weird": 1}, 2),                          # not said exited: kept
    ("unknown_pid", 0),                         # qemu-ga forgot it: nothing to reap
    ("blocked", 0),                             # never reapable: dropped
    ("not_connected", 2),                       # agent trouble: another round
])
def test_reap(agent, clock, replay, status_reply, left):
    errors = {"unknown_pid": replay("guest_exec_status_bad_pid"),
              "blocked": replay("blocked_guest_exec"),
              "not_connected": replay("agent_not_connected_right_after_create")}
    helpers = KillHelpers(["/bin/kill", "-KILL"])
    started(agent, helpers, 2)
    reply = errors[status_reply] if isinstance(status_reply, str) else status_reply
    agent.script("guest-exec-status", reply)
    helpers.reap(agent, Deadline(5.0, clock.monotonic))
    assert len(helpers) == left
    assert [a["pid"] for a in agent.calls_to("guest-exec-status")] == (
        [500, 501] if left == 0 else [500])


def test_reap_needs_time_left_in_the_round(agent, clock):
    helpers = KillHelpers(["/bin/kill", "-KILL"])
    started(agent, helpers, 1)
    agent.script("guest-exec-status", {"exited": True})
    helpers.reap(agent, Deadline(0.0, clock.monotonic))
    assert len(helpers) == 1 and agent.calls_to("guest-exec-status") == []


def test_forget_drops_them_all(agent):
    helpers = KillHelpers(["/bin/kill", "-KILL"])
    started(agent, helpers, 3)
    helpers.forget()
    assert len(helpers) == 0
