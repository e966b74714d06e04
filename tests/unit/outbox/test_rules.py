"""The sender's pure decisions, from tables."""
from __future__ import annotations

import logging

import pytest

from masakarimonitors_iim.journal.machine import Record
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.notifier.base import HeldNotification
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.outbox import rules

OURS = make_notification("inst-1", "host1", 1000.0)
OURS_FRACTION = make_notification("inst-1", "host1", 1000.6)
OTHER_VM = make_notification("inst-2", "host1", 1000.0)


def held(n, t=None, uuid="u", status="new", type="VM", time_text=None):
    when = time_text or (n.generated_time if t is None else format_generated_time(t))
    return HeldNotification(uuid, type, when, n.payload(), status)


@pytest.mark.parametrize("holding,landed,blocker,resend_at", [
    # ours is there (an earlier attempt landed): delivered under its uuid
    ([held(OURS, uuid="mine")], "mine", None, None),
    ([held(OURS, 900.0, "old"), held(OURS, uuid="mine")], "mine", None, None),
    # rendered without microseconds and with an offset: still ours
    ([held(OURS, uuid="mine", time_text="1970-01-01T00:16:40+00:00")],
     "mine", None, None),
    # only an earlier one with our payload: re-send when its window ends
    ([held(OURS, 900.0, "old")], None, "old", 900.0 + 180 + 1),
    # the latest of several decides
    ([held(OURS, 850.0, "a"), held(OURS, 950.0, "b")], None, "b", 950.0 + 181),
    # a later one (an other source) blocks too: Masakari has no upper bound
    ([held(OURS, 1100.0, "later")], None, "later", 1100.0 + 181),
    # an old blocker whose window is over by now: at least min_wait
    ([held(OURS, 700.0, "old")], None, "old", 1010.0 + 10),
    # other instances, other types, undated: not ours, no blocker in sight
    ([held(OTHER_VM, uuid="x"), held(OURS, type="COMPUTE_HOST", uuid="y"),
      held(OURS, uuid="z", time_text="yesterday")],
     None, None, 1010.0 + 180),
    ([], None, None, 1010.0 + 180),
])
def test_judge_duplicate(holding, landed, blocker, resend_at):
    judged = rules.judge_duplicate(OURS, holding, now=1010.0, window=180,
                                   min_wait=10)
    assert (judged.landed.uuid if judged.landed else None) == landed
    assert (judged.blocker.uuid if judged.blocker else None) == blocker
    if resend_at is not None:
        assert judged.resend_at == pytest.approx(resend_at)


@pytest.mark.parametrize("held_as", ["1970-01-01T00:16:40", "1970-01-01T00:16:41"])
def test_ours_held_to_the_second_is_ours(held_as):
    """Masakari on MySQL/MariaDB keeps whole seconds: ours at 1000.6 held
    as 1000 (truncated) or 1001 (rounded) is ours, not a collision (which
    would re-send it and recover the VM twice); the closest one wins."""
    holding = [held(OURS_FRACTION, 998.0, "older"),
               held(OURS_FRACTION, uuid="mine", time_text=held_as)]
    judged = rules.judge_duplicate(OURS_FRACTION, holding, now=1010.0, window=180,
                                   min_wait=10)
    assert judged.landed is not None and judged.landed.uuid == "mine"


def test_lookup_reaches_back_a_window_and_a_margin():
    assert rules.lookup_since(OURS, 180, now=5000.0) == \
        format_generated_time(1000.0 - 180 - rules.LOOKUP_MARGIN)


@pytest.mark.parametrize("age,want", [
    (0, 10), (50, 10), (100, 10), (200, 20), (1000, 100), (3000, 300),
    (10 ** 6, 300)])
def test_follow_delay(age, want):
    assert rules.follow_delay(age, base=10, cap=300) == want


@pytest.mark.parametrize("delivered,checked,now,due", [
    (1000.0, None, 1005.0, False),
    (1000.0, None, 1010.0, True),
    (1000.0, 1010.0, 1019.0, False),
    (1000.0, 1010.0, 1020.0, True),
    (1000.0, 3000.0, 3215.0, False),      # age 2215: every 221.5 s
    (1000.0, 3000.0, 3230.0, True),
    (None, None, 5.0, False),
])
def test_follow_due(delivered, checked, now, due):
    assert rules.follow_due(delivered, checked, now, base=10, cap=300) is due


def rec(state, episode=1):
    return Record(uuid="inst-1", name="vm", state=state, episode=episode,
                  last_reason="guest agent did not answer")


@pytest.mark.parametrize("status,record,level,words", [
    ("new", rec(State.REPORTED), None, None),
    ("running", rec(State.REPORTED), None, None),
    ("", rec(State.REPORTED), None, None),
    ("finished", rec(State.REPORTED), logging.INFO, "recovered: "),
    ("failed", rec(State.REPORTED), logging.ERROR, "NOT recovered"),
    ("ignored", rec(State.REPORTED), logging.ERROR, "still failing"),
    ("error", rec(State.DISCOVERY), logging.ERROR, "journal DISCOVERY"),
    ("failed", rec(State.HEALTHY), logging.WARNING, "healthy again"),
    ("ignored", rec(State.REPORTED, episode=2), logging.WARNING, "episode 2"),
    ("failed", None, logging.WARNING, "no longer on this host"),
])
def test_recovery_note(status, record, level, words):
    note = rules.recovery_note(status, "n-1", record, episode=1)
    if level is None:
        assert note is None
        return
    assert note is not None
    assert note[0] == level and words in note[1] and "n-1" in note[1]
