"""The journal state machine, as a table plus a few whole episodes."""
from __future__ import annotations

import dataclasses

import pytest

from masakarimonitors_iim.journal import boot
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.journal.machine import Thresholds
from masakarimonitors_iim.verdict import ProbeResult
from masakarimonitors_iim.verdict import Verdict

D, H, FG, R = State.DISCOVERY, State.HEALTHY, State.FAILING, State.REPORTED
OK = ProbeResult.healthy("pong")
BAD = ProbeResult.failed("agent timeout")
UNK = ProbeResult.unknown("paused")
RESET = ProbeResult(Verdict.FAILED, "app asked", reset_requested=True)
RESET_OK = ProbeResult(Verdict.HEALTHY, "app asked", reset_requested=True)
RESET_UNK = ProbeResult(Verdict.UNKNOWN, "app asked", reset_requested=True)


def rec(state: State, failures: int = 0, successes: int = 0,
        episode: int = 0) -> machine.Record:
    first = 50.0 if failures else None
    return dataclasses.replace(machine.new_record("u-1", "vm1", 0.0),
                               state=state, failures=failures,
                               successes=successes, episode=episode,
                               first_failure_at=first)


# (state, failures, successes, result, (failure, success) thresholds)
#   -> (state, failures, successes, reported?)
TABLE = [
    # DISCOVERY: needs success_threshold HEALTHY; FAILED never reports
    (D, 0, 0, OK, (3, 2), D, 0, 1, False),
    (D, 0, 1, OK, (3, 2), H, 0, 2, False),
    (D, 0, 0, OK, (3, 1), H, 0, 1, False),
    (D, 2, 0, OK, (3, 2), D, 0, 1, False),
    (D, 0, 1, BAD, (3, 2), D, 1, 0, False),
    (D, 5, 0, BAD, (3, 2), D, 6, 0, False),
    (D, 5, 0, BAD, (1, 1), D, 6, 0, False),
    (D, 2, 0, UNK, (3, 2), D, 2, 0, False),
    (D, 0, 1, UNK, (3, 2), D, 0, 1, False),
    (D, 0, 0, RESET, (3, 2), R, 0, 0, True),
    # HEALTHY
    (H, 0, 5, OK, (3, 2), H, 0, 6, False),
    (H, 0, 5, BAD, (3, 2), FG, 1, 0, False),
    (H, 0, 5, BAD, (1, 2), R, 1, 0, True),
    (H, 0, 5, UNK, (3, 2), H, 0, 5, False),
    (H, 0, 5, RESET, (3, 2), R, 0, 5, True),
    (H, 0, 5, RESET_OK, (3, 2), R, 0, 5, True),
    (H, 0, 5, RESET_UNK, (3, 2), R, 0, 5, True),
    # FAILING
    (FG, 1, 0, BAD, (3, 2), FG, 2, 0, False),
    (FG, 2, 0, BAD, (3, 2), R, 3, 0, True),
    (FG, 2, 0, UNK, (3, 2), FG, 2, 0, False),
    (FG, 2, 0, OK, (3, 2), H, 0, 1, False),
    (FG, 2, 0, OK, (3, 5), H, 0, 1, False),
    (FG, 1, 0, RESET, (3, 2), R, 1, 0, True),
    # REPORTED: no second report; recovery needs success_threshold
    (R, 3, 0, BAD, (3, 2), R, 4, 0, False),
    (R, 3, 0, BAD, (1, 1), R, 4, 0, False),
    (R, 3, 0, UNK, (3, 2), R, 3, 0, False),
    (R, 3, 0, OK, (3, 2), R, 0, 1, False),
    (R, 0, 1, OK, (3, 2), H, 0, 2, False),
    (R, 3, 0, OK, (3, 1), H, 0, 1, False),
    (R, 3, 0, RESET, (3, 2), R, 4, 0, False),
    (R, 0, 1, RESET_OK, (3, 2), H, 0, 2, False),
]


@pytest.mark.parametrize(
    "state,fails,succ,result,th,want_state,want_fails,want_succ,reported",
    TABLE)
def test_transition_table(state, fails, succ, result, th, want_state,
                          want_fails, want_succ, reported):
    start = rec(state, fails, succ, episode=4)
    new, report = machine.on_result(start, result, Thresholds(*th), 100.0)

    assert (new.state, new.failures, new.successes) == (
        want_state, want_fails, want_succ)
    assert new.last_verdict is result.verdict
    assert new.last_reason == result.reason
    assert new.updated_at == 100.0
    assert new.since == (100.0 if want_state is not state else start.since)
    if reported:
        assert report == machine.Report(episode=5, detected_at=100.0,
                                        reason=result.reason)
        assert new.episode == 5
    else:
        assert report is None
        assert new.episode == 4


@pytest.mark.parametrize("state", list(State))
def test_unknown_changes_nothing_but_last_verdict(state):
    start = rec(state, 2, 1, episode=3)
    new, report = machine.on_result(start, UNK, Thresholds(3, 2), 9.0)
    assert report is None
    assert new == dataclasses.replace(start, last_verdict=Verdict.UNKNOWN,
                                      last_reason="paused", updated_at=9.0)


@pytest.mark.parametrize("failure,success", [(0, 1), (1, 0), (-1, 3)])
def test_thresholds_must_be_positive(failure, success):
    with pytest.raises(ValueError):
        Thresholds(failure, success)


def run(rec0, results, th, t0=1.0):
    """Feed results at t0, t0+1, ...; return the final record and reports."""
    r, reports = rec0, []
    for i, res in enumerate(results):
        r, rep = machine.on_result(r, res, th, t0 + i)
        if rep:
            reports.append(rep)
    return r, reports


def healthy_record(th):
    r, _ = run(machine.new_record("u-1", "vm1", 0.0), [OK] * th.success, th)
    assert r.state is H and r.seen_healthy
    return r


def test_failures_interleaved_with_unknown_report_once():
    th = Thresholds(3, 2)
    start = healthy_record(th)
    r, reports = run(start, [BAD, BAD, UNK, BAD, BAD, UNK, BAD], th, t0=10.0)
    assert r.state is R
    assert reports == [machine.Report(1, 13.0, "agent timeout")]
    assert r.first_failure_at == 10.0


def test_recovery_then_new_failure_is_episode_two():
    th = Thresholds(2, 2)
    r = healthy_record(th)
    r, first = run(r, [BAD, BAD, OK, BAD, OK, OK], th, t0=10.0)
    assert r.state is H and r.first_failure_at is None
    r, second = run(r, [BAD, BAD], th, t0=20.0)
    assert [x.episode for x in first + second] == [1, 2]
    assert second[0].detected_at == 21.0
    assert r.episode == 2


def test_never_seen_healthy_is_never_reported():
    th = Thresholds(1, 1)
    r, reports = run(machine.new_record("u-1", "vm1", 0.0), [BAD] * 50, th)
    assert reports == [] and r.state is D and r.failures == 50
    assert not r.seen_healthy


def test_one_healthy_breaks_a_streak():
    th = Thresholds(3, 3)
    r, reports = run(healthy_record(th), [BAD, BAD, OK, BAD, BAD], th)
    assert reports == [] and r.state is FG and r.failures == 2


def test_reset_request_reports_at_once_and_only_once():
    th = Thresholds(5, 2)
    r, reports = run(healthy_record(th), [OK, RESET, RESET, BAD], th, t0=7.0)
    assert [(x.episode, x.detected_at) for x in reports] == [(1, 8.0)]
    assert r.state is R


def test_reset_without_reason_has_one():
    th = Thresholds(5, 2)
    r, report = machine.on_result(
        healthy_record(th), ProbeResult(Verdict.HEALTHY, "", True), th, 3.0)
    assert report is not None and report.reason


def test_restart_after_report_needs_proof_of_health_again():
    th = Thresholds(1, 2)
    r, reports = run(healthy_record(th), [BAD], th)
    assert len(reports) == 1
    r = boot.on_restarted(r, 5.0)
    r, more = run(r, [BAD, BAD, OK, BAD], th, t0=6.0)
    assert more == [] and r.state is D
    r, more = run(r, [OK, OK, BAD], th, t0=20.0)
    assert [x.episode for x in more] == [2]


def test_since_moves_only_on_state_change():
    th = Thresholds(3, 1)
    r = machine.new_record("u-1", "vm1", 0.0)
    r, _ = machine.on_result(r, OK, th, 1.0)
    assert r.since == 1.0
    r, _ = machine.on_result(r, OK, th, 2.0)
    assert r.since == 1.0 and r.updated_at == 2.0


@pytest.mark.parametrize("state, seen_healthy, could", [
    (State.HEALTHY, True, True),
    (State.FAILING, True, True),
    (State.REPORTED, True, False),     # counts, never reports again, whatever the policy
    (State.DISCOVERY, True, True),     # a boot into a hang is reported
    # never answered: not reported under boot_report: seen-before, but a
    # reload may set boot_report: always, and the guard then needs the history
    (State.DISCOVERY, False, True),
])
def test_can_report(state, seen_healthy, could):
    rec = dataclasses.replace(machine.new_record("u", "vm", 0.0), state=state,
                              seen_healthy=seen_healthy)
    assert machine.can_report(rec) is could
    assert machine.can_report(None) is True
