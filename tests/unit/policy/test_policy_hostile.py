"""Hostile or broken policy files: one bounded line each, never a
traceback, never a blow-up in memory, whatever part of the file is bad."""
from __future__ import annotations

import tracemalloc

import pytest

from masakarimonitors_iim.policy import PolicyError, load_policy_file
from masakarimonitors_iim.policy.loader import MAX_MESSAGE
from tests.unit.policy.test_policy_loader import VALID


def laughs(levels: int = 9, width: int = 9, leaf: str = "x") -> str:
    """Nested aliases in instance_keys: ``width ** levels`` items from a
    few hundred bytes, which the "must be a list drawn from ..., got %r"
    message used to print in full."""
    names = "abcdefghijklmnopqrstuvwxyz"
    text = "version: 1\ninstance_keys:\n- &a [%s]\n" % ",".join([leaf] * width)
    for i in range(1, levels):
        text += "- &%s [%s]\n" % (names[i], ",".join(["*" + names[i - 1]] * width))
    return text


#: The issue's case: under 400 bytes, and 800 million characters once
#: printed with %r.
LAUGHS = laughs()

HOSTILE = [
    # (what, text, words the one line must contain)
    ("nested aliases", LAUGHS, "expands to more than"),
    ("nested aliases of long strings",
     laughs(levels=6, width=10, leaf="'%s'" % ("y" * 200)),
     "expands to more than"),
    ("an alias inside itself", "version: 1\nrules: &r [*r]\n", "cycle"),
    ("a mapping inside itself", "version: 1\nprobe_sets: &m {a: *m}\n", "cycle"),
    ("deep flow nesting", "version: 1\nrules: " + "[" * 5000 + "]" * 5000 + "\n",
     "nested deeper than 32"),
    ("deep block nesting",
     "version: 1\nrules:\n" + "".join("  " * i + "- \n" for i in range(1, 60)) + "  " * 60
     + "- x\n", "nested deeper than 32"),
    ("deep through aliases",
     "version: 1\na: &a " + "[" * 20 + "]" * 20 + "\nrules: " + "[" * 20 + "*a" + "]" * 20
     + "\n", "nested deeper than 32"),
    ("!!set", "version: 1\nrules: !!set {a, b}\n", "!!set"),
    ("!!set as probe params",
     "version: 1\nrules:\n  - name: a\n    probes: [{name: exec, params: {command: [/c], "
     "!!set {a}: 1}}]\n", "!!set"),
    ("!!binary", "version: 1\nrules:\n  - name: !!binary aGVsbG8=\n", "!!binary"),
    ("!!omap", "version: 1\nprobe_sets: !!omap [{a: [ping]}]\n", "!!omap"),
    ("!!pairs", "version: 1\nrules: !!pairs [{a: 1}]\n", "!!pairs"),
    ("python object", "version: 1\nrules: !!python/object/apply:os.system ['true']\n",
     "python/object"),
    ("huge decimal", "version: 1\nrules:\n  - name: a\n    failure_threshold: " + "9" * 5000
     + "\n", "longer than 32 characters"),
    ("huge hexadecimal", "version: 1\nrules:\n  - name: a\n    interval: 0x" + "f" * 5000
     + "\n", "longer than 32 characters"),
    ("huge sexagesimal", "version: 1\nrules:\n  - name: a\n    interval: 1" + ":59" * 2000
     + "\n", "longer than 32 characters"),
    ("float overflow", "version: 1\nrules:\n  - name: a\n    interval: 1e400\n", "interval"),
    ("!!int of letters", "version: 1\nrules:\n  - name: a\n    interval: !!int '12x'\n",
     "not a valid number"),
    ("!!bool maybe", "version: 1\nrules:\n  - name: a\n    enabled: !!bool maybe\n",
     "not a valid boolean"),
    ("impossible date", "version: 1\nrules:\n  - name: a\n    match: {domain_name: 2024-13-01}"
     "\n", "not a valid date"),
    ("unhashable key", "version: 1\n? [a, b]\n: 1\n", "plain value"),
    ("two documents", "version: 1\n---\nversion: 1\n", "not valid YAML"),
    ("a megabyte key", "version: 1\n? " + "k" * 500_000 + "\n: 1\n", "unknown key"),
    ("a megabyte rule name", "version: 1\nrules:\n  - name: " + "n" * 500_000 + "\n", "name"),
]


@pytest.mark.parametrize("what, text, words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_gives_one_bounded_line(tmp_path, what, text, words):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    tracemalloc.start()
    try:
        with pytest.raises(PolicyError) as info:
            load_policy_file(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith("policy file %s: " % path)
    assert "\n" not in message and len(message) <= MAX_MESSAGE
    assert words in message, message
    # The issue's file took 1.5 GB; reading a few hundred KB of text is
    # all any of these may cost.
    assert peak < 64 * 1024 * 1024, "%s: %d bytes at peak" % (what, peak)


def test_the_issue_file_is_small():
    assert len(LAUGHS) < 400


def test_aliases_within_bounds_still_work(write_policy):
    """Anchors are plain YAML that operators use to share a block; only
    their blow-up is refused."""
    policy = load_policy_file(write_policy("""\
        version: 1
        probe_sets:
          web: &web
            - ping
            - name: exec
              params: {command: [/usr/bin/check]}
        rules:
          - name: a
            probes: *web
          - name: b
            match: {instance_name: 'b-*'}
            probes: *web
        """))
    assert policy.rules[0].values["probes"] == policy.rules[1].values["probes"]


#: Values no field takes, put in every place of a valid file in turn.
EVIL_SCALARS = ["!!set {a}", "9" * 50, "0x" + "f" * 50, "2024-13-01", "!!bool maybe",
                "!!int '12x'", "!!binary aGVsbG8=", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[x]]]]]"
                "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", ".nan", "-.inf", "{1: a, b: c}", "~"]


def _places(text: str) -> list[tuple[int, int]]:
    """Spans of the scalar values in ``text`` (after ': ', '- ', '[' or ', ')."""
    import re

    pattern = re.compile(r"(?<=: )[^\n{}\[\],]+|(?<=\[)[^\n\]\[,{}]+|(?<=, )[^\n\]\[,{}]+"
                         r"|(?<=- )[a-z_]+$", re.M)
    return [m.span() for m in pattern.finditer(text)]


@pytest.mark.parametrize("evil", EVIL_SCALARS)
def test_any_value_anywhere_is_refused_in_one_line_or_loaded(tmp_path, evil):
    places = _places(VALID)
    assert len(places) > 25
    for start, end in places:
        path = tmp_path / "policy.yaml"
        path.write_text(VALID[:start] + evil + VALID[end:])
        try:
            load_policy_file(str(path))
        except PolicyError as err:
            message = str(err)
            assert "\n" not in message and len(message) <= MAX_MESSAGE, message
