"""Boot deadline and "watched again" as tables of the pure rules
(journal/boot.py), the deadline also through the machine that asks them."""
from __future__ import annotations

import dataclasses

import pytest

from masakarimonitors_iim.journal import boot
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State, Thresholds
from masakarimonitors_iim.verdict import ProbeResult

D, H, FG, R = State.DISCOVERY, State.HEALTHY, State.FAILING, State.REPORTED
SILENT = dataclasses.replace(ProbeResult.failed("guest agent is not connected"),
                             agent_only=True)
APP = ProbeResult.failed("exec check exited 1")
PAUSED = ProbeResult.unknown("domain is PAUSED, guest health unknown")
GRACE = ProbeResult.unknown("agent disconnected 10 s ago, within the grace")
OK = ProbeResult.healthy("pong")


def booted(seen_healthy: bool, since: float = 100.0, failures: int = 2) -> machine.Record:
    """A boot seen at ``since``, failing ``failures`` rounds in a row so far."""
    return dataclasses.replace(machine.new_record("u", "vm", since),
                               seen_healthy=seen_healthy, episode=2, failures=failures)


# seen_healthy, seconds since boot, result, deadline, always -> state, reported
TABLE = [
    (True, 239, SILENT, 240, False, D, False),     # within the deadline
    (True, 240, SILENT, 240, False, R, True),      # at it: reported
    (True, 900, SILENT, 240, False, R, True),
    (True, 900, APP, 240, False, R, True),         # agent up, app never came up
    (True, 900, PAUSED, 240, False, D, False),     # UNKNOWN never counts
    (True, 900, GRACE, 240, False, D, False),
    (True, 900, OK, 240, False, D, False),         # answered: no report
    (True, 900, SILENT, None, False, D, False),    # no deadline
    (False, 900, SILENT, 240, False, D, False),    # never seen answering
    (False, 900, SILENT, 240, True, R, True),      # ... unless always
]


@pytest.mark.parametrize("seen,age,result,deadline,always,state,reported", TABLE)
def test_boot_deadline_table(seen, age, result, deadline, always, state, reported):
    t = Thresholds(failure=3, success=2, boot_deadline=deadline, boot_report_always=always)
    new, report = machine.on_result(booted(seen), result, t, 100.0 + age)
    assert new.state is state
    assert (report is not None) == reported
    if report is not None:
        assert report.episode == 3 and new.episode == 3


def test_boot_reasons_say_it_was_the_boot():
    t = Thresholds(3, 1, boot_deadline=240)
    _, report = machine.on_result(booted(True), SILENT, t, 400.0)
    assert report is not None and report.reason == (
        "guest agent did not answer within 240 s of boot; it answered in an earlier boot")
    _, report = machine.on_result(booted(True), APP, t, 400.0)
    assert report is not None and report.reason == (
        "guest did not become healthy within 240 s of boot (exec check exited 1); "
        "it answered in an earlier boot")


# deadline, seen healthy, always, seconds since the boot -> overdue
OVERDUE = [
    (240, True, False, 239.9, False),
    (240, True, False, 240, True),
    (240, False, False, 9999, False),    # never answered: not without always
    (240, False, True, 240, True),
    (None, True, True, 9999, False),     # no deadline, whatever else
]


@pytest.mark.parametrize("deadline,seen,always,age,want", OVERDUE)
def test_overdue_table(deadline, seen, always, age, want):
    t = Thresholds(3, 1, boot_deadline=deadline, boot_report_always=always)
    assert boot.overdue(booted(seen, since=100.0), t, 100.0 + age) is want


def test_a_boot_never_seen_answering_says_so():
    t = Thresholds(3, 1, boot_deadline=240, boot_report_always=True)
    assert boot.reason(booted(False), SILENT, t) == (
        "guest agent did not answer within 240 s of boot; "
        "it never answered (boot_report: always)")


def test_a_reported_boot_is_reported_once():
    t = Thresholds(3, 1, boot_deadline=10)
    rec, report = machine.on_result(booted(True), SILENT, t, 200.0)
    assert report is not None
    for now in (210.0, 220.0, 230.0):
        rec, report = machine.on_result(rec, SILENT, t, now)
        assert report is None and rec.state is R


def rec_at(state: State, updated_at: float, boot_id: str = "b1", failures: int = 2,
           seen: bool = True) -> machine.Record:
    return dataclasses.replace(machine.new_record("u", "vm", 0.0), state=state,
                               updated_at=updated_at, boot_id=boot_id, failures=failures,
                               seen_healthy=seen, held="x" if state is FG else "",
                               first_failure_at=50.0)


# journal record, boot id now, stale_after, now -> state, failures, boot id
WATCHED = [
    (rec_at(FG, 1000), "b1", 70, 1060, FG, 2, "b1"),      # recent: continued
    (rec_at(FG, 1000), "b1", 70, 1071, H, 0, "b1"),       # older: restarted
    (rec_at(FG, 1000, seen=False), "b1", 70, 5000, D, 0, "b1"),
    (rec_at(FG, 1000), "b1", None, 9999, FG, 2, "b1"),    # no bound given
    (rec_at(FG, 1000), "b2", 70, 1001, D, 0, "b2"),       # new boot
    (rec_at(R, 1000), "b2", 70, 1001, D, 0, "b2"),
    (rec_at(H, 1000, failures=0), "b2", 70, 1001, D, 0, "b2"),
    (rec_at(R, 1000), "b1", 70, 9999, R, 2, "b1"),        # reported stays
    (rec_at(FG, 1000, boot_id=""), "b2", 70, 1001, FG, 2, "b2"),  # learnt, no restart
    (rec_at(FG, 1000), "", 70, 1001, FG, 2, "b1"),        # unknown now: kept
]


@pytest.mark.parametrize("rec,boot_id_now,stale,now,state,failures,boot_id", WATCHED)
def test_watched_again_table(rec, boot_id_now, stale, now, state, failures, boot_id):
    new = boot.on_watched_again(rec, boot_id_now, stale, now)
    assert (new.state, new.failures, new.boot_id) == (state, failures, boot_id)
    assert new.episode == rec.episode
    if new.state in (D, H):
        assert new.held == "" and new.first_failure_at is None


@pytest.mark.parametrize("before,state,reported", [
    (0, D, False),          # answered, then one flap past the deadline
    (1, D, False),
    (2, R, True),           # the threshold's third FAILED in a row
])
def test_a_boot_past_its_deadline_needs_the_failure_threshold_in_a_row(
        before, state, reported):
    t = Thresholds(failure=3, success=3, boot_deadline=240)
    new, report = machine.on_result(booted(True, failures=before), APP, t, 400.0)
    assert (new.state, report is not None) == (state, reported)


def test_a_boot_that_answered_is_not_reported_on_one_flap():
    """success raised for an application that flaps while starting: two
    healthy rounds, one failed one past the deadline, is no hang."""
    t = Thresholds(failure=3, success=3, boot_deadline=240)
    rec = booted(True, failures=0)
    for now in (330.0, 340.0):
        rec, _ = machine.on_result(rec, OK, t, now)
    rec, report = machine.on_result(rec, APP, t, 350.0)
    assert (rec.state, report) == (D, None)
