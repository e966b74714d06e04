"""Parameter checks shared by the probes.

Every message has the same shape -- ``probe 'X' parameter 'Y': problem;
fix`` -- because the policy loader quotes it verbatim next to the rule
name, and an operator should be able to fix the file from that one line.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from masakarimonitors_iim.probes.base import ProbeConfigError

_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")

MAX_ARGV_ITEMS = 64
MAX_ARG_CHARS = 4096
MAX_PATH_CHARS = 4096


def fail(probe: str, field: str, problem: str) -> ProbeConfigError:
    return ProbeConfigError("probe %r parameter %r: %s" % (probe, field, problem))


def reject_unknown(probe: str, params: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(str(k) for k in params if k not in known)
    if unknown:
        raise ProbeConfigError(
            "probe %r: unknown parameter(s) %s: remove them (known: %s)"
            % (probe, ", ".join(unknown), ", ".join(sorted(known))))


def number(probe: str, params: Mapping[str, Any], field: str, default: float | None,
           minimum: float, maximum: float) -> float | None:
    """A finite number of seconds (or similar) within bounds; bools are
    refused because YAML turns ``yes`` into True and True == 1."""
    value = params.get(field, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise fail(probe, field, "must be a number, got %r" % (value,))
    if not minimum <= value <= maximum:
        raise fail(probe, field, "must be between %g and %g, got %g"
                   % (minimum, maximum, value))
    return float(value)


def integer(probe: str, params: Mapping[str, Any], field: str, default: int,
            minimum: int, maximum: int) -> int:
    value = params.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(probe, field, "must be a whole number, got %r" % (value,))
    if not minimum <= value <= maximum:
        raise fail(probe, field, "must be between %d and %d, got %d"
                   % (minimum, maximum, value))
    return value


def choice(probe: str, params: Mapping[str, Any], field: str, default: str,
           allowed: tuple[str, ...]) -> str:
    value = params.get(field, default)
    if value not in allowed:
        raise fail(probe, field, "must be one of %s, got %r"
                   % (", ".join(repr(a) for a in allowed), value))
    return value


def argv(probe: str, params: Mapping[str, Any], field: str,
         default: list[str] | None, example: str) -> list[str]:
    """A command as an argv list: no shell is ever involved, so a string
    would be ambiguous (split on spaces? quoted?) and is refused."""
    value = params.get(field, default)
    if value is None:
        raise fail(probe, field, "is required; give the command as a list, e.g. %s"
                   % example)
    if isinstance(value, str):
        raise fail(probe, field, "must be a list of strings (argv, no shell), not a "
                   "string; e.g. %s" % example)
    if not isinstance(value, (list, tuple)) or not value:
        raise fail(probe, field, "must be a non-empty list of strings, e.g. %s" % example)
    if len(value) > MAX_ARGV_ITEMS:
        raise fail(probe, field, "has %d items, at most %d allowed"
                   % (len(value), MAX_ARGV_ITEMS))
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(probe, field, "item %d must be a string, got %r; quote it in "
                       "YAML" % (i, item))
        if "\x00" in item or len(item) > MAX_ARG_CHARS:
            raise fail(probe, field, "item %d contains a NUL byte or is longer than "
                       "%d characters" % (i, MAX_ARG_CHARS))
    if not value[0]:
        raise fail(probe, field, "the first item (the program) must not be empty")
    return list(value)


def guest_path(probe: str, params: Mapping[str, Any], field: str, example: str) -> str:
    """An absolute path in the guest: the agent's working directory is
    not something an operator should have to know."""
    value = params.get(field)
    if value is None:
        raise fail(probe, field, "is required, e.g. %s" % example)
    if not isinstance(value, str) or not value:
        raise fail(probe, field, "must be a non-empty string, e.g. %s" % example)
    if "\x00" in value or len(value) > MAX_PATH_CHARS:
        raise fail(probe, field, "contains a NUL byte or is too long")
    if not (value.startswith("/") or _WINDOWS_ABSOLUTE.match(value)):
        raise fail(probe, field, "must be an absolute path in the guest, got %r; "
                   "e.g. %s" % (value, example))
    return value
