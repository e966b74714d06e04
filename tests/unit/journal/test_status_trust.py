"""Status shows a held report and where a boot stands against its deadline."""
from __future__ import annotations

import dataclasses

import pytest

from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.status import model, render_json, render_text

NOW = 1_700_000_000.0
U = "11111111-1111-1111-1111-111111111111"


def view(state, since=NOW - 30, held="", seen=True, deadline=240.0,
         boot_report="seen-before"):
    rec = dataclasses.replace(machine.new_record(U, "instance-1", since), state=state,
                              held=held, seen_healthy=seen, failures=4 if held else 0)
    live = {"name": "instance-1", "boot_deadline": deadline,
            "boot_report": boot_report} if deadline else {}
    return model.build_view([rec], [], {"monitored": {U: live}, "written_at": NOW},
                            NOW, "/j")


@pytest.mark.parametrize("state,since,seen,deadline,boot", [
    (State.DISCOVERY, NOW - 30, True, 240.0, "booting, deadline in 210 s"),
    (State.DISCOVERY, NOW - 300, True, 240.0,
     "never came up: its agent answered in an earlier boot"),
    (State.DISCOVERY, NOW - 300, False, 240.0,
     "never came up: its agent never answered (not reported: boot_report seen-before)"),
    (State.HEALTHY, NOW - 30, True, 240.0, ""),
    (State.DISCOVERY, NOW - 30, True, None, ""),     # an older monitor's snapshot
])
def test_boot_column_table(state, since, seen, deadline, boot):
    [d] = view(state, since=since, seen=seen, deadline=deadline).domains
    assert d.boot == boot


def test_a_held_report_is_shown_in_text_and_json():
    v = view(State.FAILING, held="restart budget spent: 3 notifications in 24 h")
    text = render_text.render(v)
    line = next(line for line in text.splitlines() if line.startswith(U))
    assert "FAILING (held)" in line
    assert "held: restart budget spent: 3 notifications in 24 h" in line
    [d] = render_json.as_dict(v)["domains"]
    assert d["held"] == "restart budget spent: 3 notifications in 24 h"


def test_booting_is_shown_in_the_reason_column():
    text = render_text.render(view(State.DISCOVERY))
    assert "booting, deadline in 210 s" in text


def test_never_came_up_says_it_is_reported_when_the_policy_says_always():
    [d] = view(State.DISCOVERY, since=NOW - 300, seen=False, boot_report="always").domains
    assert d.boot == "never came up: its agent never answered (reported: boot_report always)"
