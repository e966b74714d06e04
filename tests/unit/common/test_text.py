"""The one text cleaner, as a table."""
import pytest

from masakarimonitors_iim.common.text import one_line


@pytest.mark.parametrize("raw, expected", [
    ("plain", "plain"),
    ("a\n  b\tc", "a b c"),
    ("two\nlines\r\tand tab", "two lines and tab"),
    ("\x1b[31mred\x1b[0m", "?[31mred?[0m"),
    ("bidi \u202eevil", "bidi ?evil"),
    ("bad\x1b[31m red\u202e text\x00", "bad?[31m red? text?"),
    (b"bytes \xff", "bytes \ufffd"),
    (42, "42"),
    (None, ""),
])
def test_one_line(raw, expected):
    assert one_line(raw) == expected


def test_one_line_caps_length_within_the_limit():
    out = one_line("x" * 10_000, 50)
    assert out == "x" * 47 + "..."
    assert len(one_line("x" * 1000)) == 300


def test_one_line_looks_at_a_bounded_head_of_huge_text():
    # Whitespace that collapses to nothing must not hide that text was cut.
    out = one_line(" " * 100_000 + "tail", 50)
    assert out.endswith("...")
    assert len(out) <= 50
