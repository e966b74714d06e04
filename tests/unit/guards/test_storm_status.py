"""The storm guard in ``masakari-iim status``: from the monitor's snapshot
to the text line and the JSON object."""
import json

import pytest

from masakarimonitors_iim.status import model, render_json, render_text

NOW = 1_700_000_000.0
PATH = "/var/lib/masakarimonitors/iim-journal.sqlite"


def view(storm):
    snap = {"host": "compute-1", "written_at": NOW - 2, "monitored": {},
            "unmonitored": {}, "unmonitored_names": {}}
    if storm is not None:
        snap["storm"] = storm
    return model.build_view([], [], snap, NOW, PATH)


def storm(**kw):
    raw = {"enabled": True, "holding": False, "since": None, "calm_since": None,
           "failing": 1, "watched": 10, "needed": 5, "window": 120.0, "max_hold": 1800.0,
           "releases_at": None}
    raw.update(kw)
    return raw


@pytest.mark.parametrize("raw, want", [
    (storm(), "storm guard: not holding (1 of 10 domains failing; holds when 5 begin "
              "failing within 120 s)"),
    (storm(enabled=False), "storm guard: off"),
    (storm(holding=True, since=NOW - 65, failing=7, releases_at=NOW - 65 + 1800),
     "storm guard: HOLDING notifications since 2023-11-14 22:12:15 UTC (for 1m05s): "
     "7 of 10 domains failing; the host, libvirt or storage is the likely cause; "
     "clears 120 s after fewer than 5 fail; releases held reports at 22:42:15 UTC "
     "at the latest"),
    (storm(holding=True, since=NOW - 65, calm_since=NOW - 20, failing=2,
           releases_at=NOW - 65 + 1800),
     "storm guard: HOLDING notifications since 2023-11-14 22:12:15 UTC (for 1m05s): "
     "2 of 10 domains failing; the host, libvirt or storage is the likely cause; "
     "clears in 1m40s if it stays below 5; releases held reports at 22:42:15 UTC "
     "at the latest"),
    # a release on another day (UTC) shows its date
    (storm(holding=True, since=NOW - 65, failing=7, releases_at=NOW + 86400),
     "storm guard: HOLDING notifications since 2023-11-14 22:12:15 UTC (for 1m05s): "
     "7 of 10 domains failing; the host, libvirt or storage is the likely cause; "
     "clears 120 s after fewer than 5 fail; releases held reports at "
     "2023-11-15 22:13:20 UTC at the latest"),
    # a snapshot of a monitor without max_hold: no release shown
    (storm(holding=True, since=NOW - 65, failing=7, max_hold=None, releases_at=None),
     "storm guard: HOLDING notifications since 2023-11-14 22:12:15 UTC (for 1m05s): "
     "7 of 10 domains failing; the host, libvirt or storage is the likely cause; "
     "clears 120 s after fewer than 5 fail"),
])
def test_text_shows_one_storm_line(raw, want):
    text = render_text.render(view(raw))
    lines = [line for line in text.splitlines() if line.startswith("storm guard")]
    assert lines == [want]


@pytest.mark.parametrize("raw", [None, "HOLDING", ["x"]])
def test_no_or_odd_snapshot_shows_no_storm_line(raw):
    v = view(raw)
    assert v.storm is None
    assert "storm guard" not in render_text.render(v)
    assert json.loads(render_json.render(v))["storm"] is None


def test_odd_values_in_the_snapshot_do_not_break_status():
    v = view(storm(holding="yes", failing="7", since="yesterday", window=None,
                   max_hold="long", releases_at="soon"))
    assert v.storm == model.StormView(enabled=True, holding=False, since=None,
                                      calm_since=None, failing=0, watched=10, needed=5,
                                      window=0.0, max_hold=0.0, releases_at=None)


def test_json_storm_object():
    data = json.loads(render_json.render(view(storm(holding=True, since=NOW - 65,
                                                    failing=7,
                                                    releases_at=NOW - 65 + 1800))))
    assert data["storm"] == {"enabled": True, "holding": True,
                             "since": "2023-11-14T22:12:15Z", "calm_since": None,
                             "failing": 7, "watched": 10, "needed": 5, "window": 120.0,
                             "max_hold": 1800.0, "releases_at": "2023-11-14T22:42:15Z"}
