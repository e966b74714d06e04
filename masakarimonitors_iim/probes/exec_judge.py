"""Judging a finished exec check: its signal, exit code and stdout.

Apart from :mod:`.exec`, which starts and follows the command in the
guest, because this part is pure (a guest-exec-status reply in, a
:class:`ProbeResult` out) and changes for other reasons (what counts as
healthy output) than the following does (qemu-ga's exec bookkeeping).

``stdout_regex`` runs on output the guest controls, so it is compiled
with RE2, never Python's ``re``: ``re`` backtracks (``(a+)+$`` on 27
bytes of guest output kept a worker busy, holding the GIL, for 16 s,
which delayed SIGTERM just as long), while RE2 runs in time linear in
the output and releases the GIL. Patterns are compiled without capture
groups (only "is there a match" is asked), which keeps RE2 on its fast
path, and patterns whose compiled program is large are refused: RE2's
fallback when its DFA cache fills costs output size times program size.

Output is captured only when ``stdout_regex`` is set (qemu-ga returns up
to 16 MB a stream otherwise); what is kept is capped at ``max_output``
bytes and sanitised before it reaches a log or a reason. A status reply
too big for the transport still arrives, its streams cut to their first
1 MiB and flagged truncated (see ``hypervisor.bounded_reply``), so
output size alone never decides a verdict.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from typing import Any, TypeGuard

import re2

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.probes import _params
from masakarimonitors_iim.verdict import ProbeResult

LOG = logging.getLogger(__name__)

NAME = "exec"
MAX_REGEX_CHARS = 1000
#: Largest compiled RE2 program accepted. Simple checks ("^OK", "ready",
#: "version \\d+\\.\\d+") compile to under 20 instructions; at 2000, the
#: slowest search of the largest output (1 MiB) stays around a second.
MAX_PROGRAM_SIZE = 2000


def is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool: JSON ``true`` must not pass for exit code 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def exit_codes(value: object) -> frozenset[int]:
    """The ``expect_exit`` parameter: one code 0-255 or a list of them."""
    codes = value if isinstance(value, (list, tuple)) else [value]
    if not codes:
        raise _params.fail(NAME, "expect_exit", "must not be an empty list")
    for code in codes:
        if not is_int(code) or not 0 <= code <= 255:
            raise _params.fail(NAME, "expect_exit", "must be an exit code 0-255 or a list "
                               "of them, got %s" % one_line(repr(value), 80))
    return frozenset(codes)


def compile_pattern(value: object) -> Any:
    """The ``stdout_regex`` parameter as an RE2 pattern (None when unset)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_REGEX_CHARS:
        raise _params.fail(NAME, "stdout_regex", "must be a non-empty string of at most "
                           "%d characters" % MAX_REGEX_CHARS)
    options = re2.Options()
    options.never_capture = True   # "(" groups only; nothing is extracted
    options.log_errors = False     # RE2 would write to stderr, past our log
    try:
        pattern = re2.compile(value, options)
    except re2.error as err:
        detail = err.args[0] if err.args else err
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise _params.fail(NAME, "stdout_regex", "invalid or unsupported regular "
                           "expression (%s); use RE2 syntax: no backreferences or "
                           "lookaround" % one_line(detail, 120)) from None
    if pattern.programsize > MAX_PROGRAM_SIZE:
        raise _params.fail(NAME, "stdout_regex", "pattern too complex (compiles to %d "
                           "instructions, at most %d); use fewer or smaller counted "
                           "repetitions such as {1,1000}"
                           % (pattern.programsize, MAX_PROGRAM_SIZE))
    return pattern


def decode_output(status: dict, data_key: str, cut_key: str,
                  max_output: int) -> tuple[str, bool]:
    """At most ``max_output`` bytes of a captured stream, and whether it
    was cut. The base64 text is sliced before decoding, so a huge reply
    never becomes a huge bytes object here."""
    raw = status.get(data_key)
    if not isinstance(raw, str):
        return "", False
    chars = 4 * ((max_output + 2) // 3)
    cut = len(raw) > chars or status.get(cut_key) is True
    try:
        data = base64.b64decode(raw[:chars], validate=True)
    except (binascii.Error, ValueError):
        return "", False
    if len(data) > max_output:
        cut = True
    return data[:max_output].decode("utf-8", "replace"), cut


@dataclasses.dataclass(frozen=True)
class Judge:
    """How one exec probe judges its command once it has exited."""

    shown: str                     # the command, cleaned, for reasons
    expect_exit: frozenset[int]
    pattern: Any                   # compiled by compile_pattern, or None
    max_output: int

    def judge(self, status: dict, elapsed: float) -> ProbeResult:
        signal = status.get("signal")
        code = status.get("exitcode")
        stdout, cut = decode_output(status, "out-data", "out-truncated", self.max_output)
        stderr, _ = decode_output(status, "err-data", "err-truncated", self.max_output)
        detail = "; stderr: %r" % one_line(stderr, 120) if stderr.strip() else ""
        if is_int(signal):
            return ProbeResult.failed("check command %s was terminated by signal %d%s"
                                      % (self.shown, signal, detail))
        if not is_int(code):
            return ProbeResult.unknown("check command %s exited without an exit code"
                                       % self.shown)
        if code not in self.expect_exit:
            return ProbeResult.failed("check command %s exited with %d, expected %s%s"
                                      % (self.shown, code, _codes_text(self.expect_exit),
                                         detail))
        if self.pattern is not None and not _matches(self.pattern, stdout):
            shown = one_line(stdout, 120) + (" (output capped)" if cut else "")
            return ProbeResult.failed("check command %s output does not match %r: %r"
                                      % (self.shown, one_line(self.pattern.pattern, 80),
                                         shown))
        LOG.debug("check command %s passed in %.2f s", self.shown, elapsed)
        return ProbeResult.healthy()


def _codes_text(codes: frozenset[int]) -> str:
    return " or ".join(str(c) for c in sorted(codes))


def _matches(pattern: Any, stdout: str) -> bool:
    """Search as Python's ``re`` did, where ``$`` also matches before a
    final newline: RE2's does not, and almost every check prints one, so
    ``^OK$`` on "OK\n" must still pass. Both searches are linear."""
    if pattern.search(stdout) is not None:
        return True
    return stdout.endswith("\n") and pattern.search(stdout[:-1]) is not None
