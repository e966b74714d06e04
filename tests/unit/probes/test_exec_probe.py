"""ExecProbe against a replaying agent: hung, failing, blocked, healthy."""
from __future__ import annotations

import base64
import subprocess
import sys
import threading

import pytest

from masakarimonitors_iim.hypervisor.types import AgentError, ErrorKind
from masakarimonitors_iim.probes import exec_judge
from masakarimonitors_iim.probes.base import ProbeConfigError
from masakarimonitors_iim.probes.exec import ExecProbe
from masakarimonitors_iim.verdict import Verdict

RUNNING = {"exited": False}   # the shape recorded as "hanging_exec_status"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def exited(code: int = 0, out: bytes | None = None, err: bytes | None = None) -> dict:
    status = {"exited": True, "exitcode": code}
    if out is not None:
        status["out-data"] = b64(out)
    if err is not None:
        status["err-data"] = b64(err)
    return status


class ExecGuest:
    """qemu-ga's guest-exec bookkeeping: pids, argv, status replies.

    ``plan`` lists, per started check command, the statuses its polls
    return (the last repeats); kill helpers answer ``kill_status``. Once
    a status says exited, the pid is forgotten, as qemu-ga does, and
    unknown pids get the recorded "Invalid parameter 'pid'" error.
    """

    def __init__(self, agent, replay, plan=None, kill_status=None):
        self.replay = replay
        self.plan = list(plan or [])
        self.kill_status = kill_status or [exited(0)]
        self.next_pid = 311
        self.procs: dict[int, list] = {}
        self.argv: dict[int, list[str]] = {}
        agent.script("guest-exec", self.exec)
        agent.script("guest-exec-status", self.status)

    def exec(self, args):
        pid = self.next_pid
        self.next_pid += 1
        argv = [args["path"]] + args.get("arg", [])
        self.argv[pid] = argv
        if argv[0] in ("/bin/kill", "/usr/bin/pkill"):
            self.procs[pid] = list(self.kill_status)
        else:
            self.procs[pid] = list(self.plan.pop(0) if self.plan else [exited(0)])
        return {"pid": pid}

    def status(self, args):
        script = self.procs.get(args["pid"])
        if script is None:
            return self.replay("guest_exec_status_bad_pid")
        reply = script.pop(0) if len(script) > 1 else script[0]
        if reply.get("exited"):
            del self.procs[args["pid"]]
        return reply

    def kills(self) -> list[list[str]]:
        return [argv for argv in self.argv.values() if argv[0] == "/bin/kill"]

    def checks(self) -> list[int]:
        return [pid for pid, argv in self.argv.items() if argv[0] == "/usr/local/bin/check-app"]


@pytest.fixture
def guest(agent, replay):
    return lambda plan=None, kill_status=None: ExecGuest(agent, replay, plan, kill_status)


def make_probe(clock, **params):
    params.setdefault("command", ["/usr/local/bin/check-app"])
    return clock.attach(ExecProbe(params))


def test_healthy_command(agent, clock, guest):
    g = guest([[RUNNING, exited(0)]])
    probe = make_probe(clock, command=["/usr/local/bin/check-app", "--quick"])

    result = probe.run(agent, 5.0)

    assert result.verdict is Verdict.HEALTHY
    assert agent.calls_to("guest-exec") == [
        {"path": "/usr/local/bin/check-app", "arg": ["--quick"], "capture-output": False}]
    assert g.kills() == []
    assert probe.required_commands() == {"guest-exec", "guest-exec-status"}


def test_hung_command_is_killed_at_deadline_and_failed(agent, clock, guest, recorded):
    g = guest([[recorded["hanging_exec_status"]]],
              kill_status=[RUNNING, exited(0)])
    probe = make_probe(clock)
    start = clock.monotonic()

    result = probe.run(agent, 5.0)

    assert result.verdict is Verdict.FAILED
    assert "did not finish within" in result.reason and "kill issued" in result.reason
    assert g.kills() == [["/bin/kill", "-KILL", "311"]]
    # The kill is sent before the round's deadline, not after it.
    assert clock.monotonic() - start <= 5.0 + 0.01

    # Next round: the killed command is reaped (recorded reply after the
    # kill), then a fresh one runs; the kill helper is reaped too.
    g.procs[311] = [recorded["hanging_exec_after_kill"]]
    g.plan.append([exited(0)])
    result = probe.run(agent, 5.0)
    assert result.verdict is Verdict.HEALTHY
    assert g.checks() == [311, 313]
    assert 312 not in g.procs, "kill helper should have been reaped"


def test_command_still_running_after_kill_is_killed_again_not_restarted(
        agent, clock, guest, recorded):
    g = guest([[recorded["hanging_exec_status"]]])
    probe = make_probe(clock)
    assert probe.run(agent, 5.0).verdict is Verdict.FAILED

    clock.advance(10)
    result = probe.run(agent, 5.0)

    assert result.verdict is Verdict.FAILED
    assert "still running" in result.reason
    assert len(g.kills()) == 2
    assert g.checks() == [311], "no new check while the old one is still running"


def test_exit_code_mismatch_fails_with_stderr_excerpt(agent, clock, guest):
    guest([[exited(3, out=b"", err=b"db: connection refused\n")]])
    probe = make_probe(clock, stdout_regex="OK")

    result = probe.run(agent, 5.0)

    assert result.verdict is Verdict.FAILED
    assert "exited with 3, expected 0" in result.reason
    assert "connection refused" in result.reason


def test_expect_exit_list(agent, clock, guest):
    guest([[exited(1)]])
    probe = make_probe(clock, expect_exit=[0, 1])
    assert probe.run(agent, 5.0).verdict is Verdict.HEALTHY


def test_killed_by_signal_fails(agent, clock, guest, recorded):
    guest([[recorded["hanging_exec_after_kill"]]])   # {"signal": 15, "exited": true}
    result = make_probe(clock).run(agent, 5.0)
    assert result.verdict is Verdict.FAILED
    assert "signal 15" in result.reason


def test_regex_match_and_capture_requested(agent, clock, guest):
    guest([[exited(0, out=b"OK 12 connections\n")]])
    probe = make_probe(clock, stdout_regex=r"^OK \d+")

    assert probe.run(agent, 5.0).verdict is Verdict.HEALTHY
    assert agent.calls_to("guest-exec")[0]["capture-output"] is True


@pytest.mark.parametrize("pattern, out, verdict", [
    # $ before the final newline, as Python's re had it (RE2 alone would not)
    (r"^OK$", b"OK\n", Verdict.HEALTHY),
    (r"^OK$", b"OK", Verdict.HEALTHY),
    (r"OK\n$", b"OK\n", Verdict.HEALTHY),
    (r"^OK$", b"OK\n\n", Verdict.FAILED),
    (r"^OK$", b"NOT OK\n", Verdict.FAILED),
])
def test_end_anchor_allows_the_final_newline(agent, clock, guest, pattern, out, verdict):
    guest([[exited(0, out=out)]])
    assert make_probe(clock, stdout_regex=pattern).run(agent, 5.0).verdict is verdict


def test_regex_mismatch_fails(agent, clock, guest):
    guest([[exited(0, out=b"DEGRADED: replica lag 300s\n")]])
    result = make_probe(clock, stdout_regex=r"^OK").run(agent, 5.0)
    assert result.verdict is Verdict.FAILED
    assert "does not match" in result.reason and "DEGRADED" in result.reason


def test_output_is_capped_and_sanitised(agent, clock, guest):
    noisy = b"\x1b[31mERR\x1b[0m\r\n" + b"x" * 10_000 + b"OK"
    guest([[exited(0, out=noisy)]])
    probe = make_probe(clock, stdout_regex="OK", max_output=64)

    result = probe.run(agent, 5.0)

    # "OK" is beyond the cap, so the regex never sees it.
    assert result.verdict is Verdict.FAILED
    assert "(output capped)" in result.reason
    assert "\x1b" not in result.reason and "\n" not in result.reason and "\r" not in result.reason
    assert len(result.reason) < 400


def test_huge_base64_is_sliced_before_decoding():
    text, cut = exec_judge.decode_output({"out-data": b64(b"A" * 3_000_000)}, "out-data",
                                         "out-truncated", 10)
    assert text == "A" * 10 and cut


def test_disabled_guest_exec_is_unknown_never_failed(agent, clock, replay):
    agent.script("guest-exec", replay("blocked_guest_exec"))
    result = make_probe(clock).run(agent, 5.0)
    assert result.verdict is Verdict.UNKNOWN
    assert "guest-exec" in result.reason and "refuses" in result.reason


def test_disabled_guest_exec_unknown_even_if_classified_as_command_failed(
        agent, clock, recorded):
    msg = recorded["blocked_guest_exec"]["err"]["msg"]
    agent.script("guest-exec", AgentError(ErrorKind.COMMAND_FAILED, msg, code=1))
    assert make_probe(clock).run(agent, 5.0).verdict is Verdict.UNKNOWN


def test_blocked_status_keeps_pid_and_starts_nothing_new(agent, clock, guest):
    g = guest([[RUNNING]])
    probe = make_probe(clock)
    agent.script("guest-exec-status", AgentError(
        ErrorKind.COMMAND_DISABLED, "internal error: unable to execute QEMU agent command "
        "'guest-exec-status': Command guest-exec-status has been disabled", code=1))

    first = probe.run(agent, 5.0)
    second = probe.run(agent, 5.0)

    assert first.verdict is second.verdict is Verdict.UNKNOWN
    assert "guest-exec-status" in second.reason
    assert g.checks() == [311]


def test_program_missing_is_unknown_by_default(agent, clock, command_failed):
    agent.script("guest-exec", command_failed(
        "guest-exec", "Failed to execute child process “/usr/local/bin/check-app” "
        "(No such file or directory)"))
    result = make_probe(clock).run(agent, 5.0)
    assert result.verdict is Verdict.UNKNOWN
    assert "cannot start check command" in result.reason


def test_program_missing_can_be_configured_as_failed(agent, clock, command_failed):
    agent.script("guest-exec", command_failed("guest-exec", "Failed to execute child process"))
    result = make_probe(clock, on_spawn_error="failed").run(agent, 5.0)
    assert result.verdict is Verdict.FAILED


def test_agent_hang_propagates_and_next_round_resumes_same_pid(agent, clock, guest, replay):
    g = guest([[RUNNING, exited(0)]])
    probe = make_probe(clock)
    hung = replay("agent_sigstopped", 0)   # "Guest agent not available for now"
    agent.script("guest-exec-status", hung)

    with pytest.raises(AgentError) as info:
        probe.run(agent, 5.0)
    assert info.value.kind is ErrorKind.AGENT_TIMEOUT

    agent.script("guest-exec-status", g.status)   # the agent is back
    assert probe.run(agent, 5.0).verdict is Verdict.HEALTHY
    assert g.checks() == [311], "resumed the pending pid instead of starting another"


def test_pid_unknown_after_guest_reboot_starts_afresh(agent, clock, guest, recorded):
    g = guest([[RUNNING], [exited(0)]])
    probe = make_probe(clock, timeout=60)
    assert probe.run(agent, 2.0).verdict is Verdict.UNKNOWN    # still running
    del g.procs[311]                                            # agent restarted

    result = probe.run(agent, 2.0)

    assert result.verdict is Verdict.HEALTHY
    assert g.checks() == [311, 312]


@pytest.mark.parametrize("gap", [3.0, 600.0])
def test_long_timeout_spans_rounds_then_kills(agent, clock, guest, gap):
    # timeout 12 s of watched time, 2 s rounds (1.6 s of polling each, the
    # rest is kept for a kill): rounds in between are UNKNOWN, and however
    # far apart the rounds are, the hung command is killed in the end.
    g = guest([[RUNNING]])
    probe = make_probe(clock, timeout=12)

    verdicts = []
    for _ in range(10):
        verdicts.append(probe.run(agent, 2.0).verdict)
        clock.advance(gap)

    assert verdicts[:7] == [Verdict.UNKNOWN] * 7
    assert verdicts[7] is Verdict.FAILED
    assert g.checks() == [311] and len(g.kills()) >= 1


def test_time_the_guest_was_frozen_does_not_count(agent, clock, guest):
    g = guest([[RUNNING]])
    probe = make_probe(clock, timeout=3)
    assert probe.run(agent, 2.0).verdict is Verdict.UNKNOWN   # 1.6 s watched

    clock.advance(300)   # domain paused for five minutes
    start = clock.monotonic()
    result = probe.run(agent, 2.0)

    # Killed only once 3 s of running were actually watched (1.4 s more),
    # not at the first poll after the pause.
    assert result.verdict is Verdict.FAILED
    assert clock.monotonic() - start == pytest.approx(1.4, abs=0.05)
    assert len(g.kills()) == 1


def test_close_kills_running_command(agent, clock, guest):
    g = guest([[RUNNING]])
    probe = make_probe(clock, timeout=60)
    probe.run(agent, 2.0)

    probe.close(agent)

    assert g.kills() == [["/bin/kill", "-KILL", "311"]]


def test_close_does_not_kill_a_reaped_pid(agent, clock, guest):
    g = guest([[RUNNING, RUNNING, RUNNING, exited(0)]])
    probe = make_probe(clock, timeout=60)
    probe.run(agent, 0.3)
    g.procs[311] = [exited(0)]

    probe.close(agent)
    probe.close(None)

    assert g.kills() == []


def test_close_during_a_round_is_done_by_that_round(agent, clock, guest):
    """The monitor may close a probe (reload, restart) while a worker runs
    it: close() must not block, and the command must still be killed."""
    g = guest([[RUNNING]])
    probe = make_probe(clock, timeout=60)
    in_round = threading.Event()
    release = threading.Event()
    polls = []

    def slow_status(args):
        polls.append(args["pid"])
        if len(polls) == 2:
            in_round.set()
            assert release.wait(5)
        return g.status(args)
    agent.script("guest-exec-status", slow_status)

    worker = threading.Thread(target=probe.run, args=(agent, 2.0))
    worker.start()
    assert in_round.wait(5)
    probe.close(agent)             # returns at once, the round is still running
    assert g.kills() == []
    release.set()
    worker.join(5)

    assert g.kills() == [["/bin/kill", "-KILL", "311"]]
    assert probe.run(agent, 2.0).verdict is Verdict.UNKNOWN   # closed for good
    assert g.checks() == [311]


def test_custom_kill_command(agent, clock, guest):
    g = guest([[RUNNING]])
    probe = make_probe(clock, kill_command=["/usr/bin/pkill", "-TERM", "-P"])
    probe.run(agent, 3.0)
    assert [argv for argv in g.argv.values() if argv[0] == "/usr/bin/pkill"] == [
        ["/usr/bin/pkill", "-TERM", "-P", "311"]]


def test_malformed_exec_reply_is_unknown(agent, clock):
    agent.script("guest-exec", {"pid": "311"})
    assert make_probe(clock).run(agent, 5.0).verdict is Verdict.UNKNOWN


@pytest.mark.parametrize("params, field", [
    ({}, "command"),
    ({"command": "/bin/check --quick"}, "command"),
    ({"command": []}, "command"),
    ({"command": ["/bin/check", 3]}, "command"),
    ({"command": [""]}, "command"),
    ({"command": ["/bin/c"], "timeout": -1}, "timeout"),
    ({"command": ["/bin/c"], "timeout": True}, "timeout"),
    ({"command": ["/bin/c"], "expect_exit": 256}, "expect_exit"),
    ({"command": ["/bin/c"], "expect_exit": "0"}, "expect_exit"),
    ({"command": ["/bin/c"], "expect_exit": []}, "expect_exit"),
    ({"command": ["/bin/c"], "stdout_regex": "("}, "stdout_regex"),
    # RE2 has no backreferences or lookaround, and refuses huge programs
    ({"command": ["/bin/c"], "stdout_regex": r"(a)\1"}, "stdout_regex"),
    ({"command": ["/bin/c"], "stdout_regex": "(?=OK)"}, "stdout_regex"),
    ({"command": ["/bin/c"], "stdout_regex": ".{1000}"}, "stdout_regex"),
    ({"command": ["/bin/c"], "stdout_regex": "x" * 1001}, "stdout_regex"),
    ({"command": ["/bin/c"], "stdout_regex": 7}, "stdout_regex"),
    ({"command": ["/bin/c"], "max_output": 0}, "max_output"),
    ({"command": ["/bin/c"], "kill_command": "kill -9"}, "kill_command"),
    ({"command": ["/bin/c"], "on_spawn_error": "maybe"}, "on_spawn_error"),
    ({"command": ["/bin/c"], "shell": True}, "shell"),
])
def test_invalid_params_name_the_field(params, field):
    with pytest.raises(ProbeConfigError) as info:
        ExecProbe(params)
    message = str(info.value)
    assert field in message and "exec" in message
    assert "\n" not in message


#: Run in a child process with a timeout: were the pattern ever compiled
#: with Python's ``re`` again, the search would backtrack for years while
#: holding the GIL, and only a separate process can be stopped from outside.
_PATHOLOGICAL = """
import base64, time
from masakarimonitors_iim.probes.exec_judge import Judge, compile_pattern
judge = Judge("check", frozenset([0]), compile_pattern(r"^(a+)+$"), 4096)
out = base64.b64encode(b"a" * 64 + b"!").decode()
started = time.monotonic()
result = judge.judge({"exited": True, "exitcode": 0, "out-data": out}, 0.0)
print(result.verdict.value, round(time.monotonic() - started, 3))
"""


def test_a_pattern_that_backtracks_in_re_is_judged_at_once():
    """(a+)+$ on 65 bytes: 2**64 steps for a backtracking engine, one
    linear pass for RE2. The output does not match, so FAILED."""
    done = subprocess.run([sys.executable, "-c", _PATHOLOGICAL], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    verdict, seconds = done.stdout.split()
    assert verdict == "FAILED"
    assert float(seconds) < 1.0


def test_patterns_are_searched_not_anchored_and_capture_nothing():
    judge = exec_judge.Judge("check", frozenset([0]),
                             exec_judge.compile_pattern(r"(ready|up) (\d+)"), 4096)
    ok = {"exited": True, "exitcode": 0, "out-data": b64(b"service up 3 workers\n")}
    bad = {"exited": True, "exitcode": 0, "out-data": b64(b"service down\n")}
    assert judge.judge(ok, 0.0).verdict is Verdict.HEALTHY
    assert judge.judge(bad, 0.0).verdict is Verdict.FAILED


def test_regex_errors_never_reach_stderr(capfd):
    """RE2 logs parse errors to stderr by default, past the monitor's log."""
    with pytest.raises(ProbeConfigError):
        exec_judge.compile_pattern("(")
    assert capfd.readouterr().err == ""


# -- verbose checks (issue 8): size never turns a verdict -----------------------

def _bounded(code: int, out: bytes, err: bytes) -> dict:
    """What the transport hands up for a guest-exec-status reply over its
    1 MiB limit (hypervisor.bounded_reply)."""
    import json

    from masakarimonitors_iim.hypervisor import bounded_reply

    reply = json.dumps({"return": exited(code, out=out, err=err)})
    assert len(reply) > 1 << 20
    return bounded_reply.parse_agent_reply("guest-exec-status", reply, 1 << 20)


@pytest.mark.parametrize("code,out,err,verdict,words", [
    # healthy but 900 KB (or 3 MB) of stderr: still healthy
    (0, b"OK\n", b"x" * 900_000, Verdict.HEALTHY, ""),
    (0, b"OK\n", b"x" * 3_000_000, Verdict.HEALTHY, ""),
    # healthy with huge stdout whose start matches
    (0, b"OK\n" + b"y" * 2_000_000, b"", Verdict.HEALTHY, ""),
    # a failing exit code stays failing however much was written
    (1, b"OK\n", b"x" * 900_000, Verdict.FAILED, "exited with 1"),
    # a match only past the searched bytes is a mismatch, and says why
    (0, b"y" * 2_000_000 + b"\nOK\n", b"", Verdict.FAILED, "(output capped)"),
])
def test_verbose_check_is_judged_on_its_exit_code_and_first_bytes(
        agent, clock, guest, code, out, err, verdict, words):
    guest([[_bounded(code, out, err)]])
    probe = make_probe(clock, stdout_regex="(?m)^OK$", max_output=1 << 20)

    result = probe.run(agent, 5.0)

    assert result.verdict is verdict, result.reason
    assert words in (result.reason or "")
    assert len(result.reason or "") < 400
