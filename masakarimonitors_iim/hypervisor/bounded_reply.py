"""Reading an oversized guest-exec-status reply without the whole of it.

qemu-ga forgets a command the moment guest-exec-status reports it
exited, so that reply is the only answer there will ever be: refusing it
for its size (as every other oversized reply is refused) loses the exit
code, and a healthy check that merely wrote a lot became a failed call,
hence a FAILED guest. A big reply is still a valid answer: its exit code
and the first bytes of each stream are read here by scanning the JSON
text, never parsing the captured streams whole, so what is kept stays
bounded whatever the guest wrote. Anything not shaped like
``{"return": {...}}`` with scalar or string members is refused as before.
"""
from __future__ import annotations

import json
import re
from typing import Any

from masakarimonitors_iim.hypervisor import translate
from masakarimonitors_iim.hypervisor.types import AgentError, ErrorKind

COMMAND = "guest-exec-status"
#: base64 members and the flag that says the kept part is not all of it.
STREAMS = {"out-data": "out-truncated", "err-data": "err-truncated"}
MAX_KEY_CHARS = 64

_WS = re.compile(r"[ \t\n\r]*+")
# From just after an opening quote to just after its closing quote;
# possessive, so an unterminated string fails in linear time.
_STRING_REST = re.compile(r'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_SCALAR = re.compile(r"true|false|null|-?[0-9]{1,20}(?![0-9.eE])")


def parse_agent_reply(command: str, reply: str | None, max_bytes: int) -> Any:
    """As :func:`translate.parse_agent_reply`, except that an oversized
    guest-exec-status reply is read bounded: each stream is cut to its
    first ``max_bytes`` bytes (the judge never searches more than that)
    and its ``*-truncated`` flag set. The size test on ASCII text
    (every real guest-exec-status reply: its data is base64) costs no
    copy; anything else keeps the usual byte count and refusal."""
    if command == COMMAND and reply is not None and reply.isascii() \
            and len(reply) > max_bytes:
        return exec_status(reply, max_bytes)
    return translate.parse_agent_reply(command, reply, max_bytes)


def exec_status(reply: str, keep_bytes: int) -> dict[str, Any]:
    """The ``return`` object of a guest-exec-status reply, each stream cut
    to base64 for at most ``keep_bytes`` bytes; AgentError BAD_REPLY if
    the text is not such a reply."""
    keep_chars = 4 * ((keep_bytes + 2) // 3)
    pos = _expect(reply, 0, "{")
    key, pos = _key(reply, pos)
    if key != "return":
        raise _bad(len(reply), "its only member must be 'return', found %r" % key)
    pos = _expect(reply, pos, ":")
    pos = _expect(reply, pos, "{")
    status: dict[str, Any] = {}
    cut: set[str] = set()
    pos = _skip(reply, pos)
    if reply.startswith("}", pos):
        pos += 1
    else:
        while True:
            key, pos = _key(reply, pos)
            pos = _expect(reply, pos, ":")
            keep = keep_chars if key in STREAMS else MAX_KEY_CHARS
            value, was_cut, pos = _value(reply, pos, keep)
            status[key] = value
            if was_cut and key in STREAMS:
                cut.add(key)
            pos = _skip(reply, pos)
            if reply.startswith(",", pos):
                pos += 1
                continue
            pos = _expect(reply, pos, "}")
            break
    pos = _expect(reply, pos, "}")
    if _skip(reply, pos) != len(reply):
        raise _bad(len(reply), "text follows the reply object")
    for data_key in cut:
        status[STREAMS[data_key]] = True
    return status


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _expect(text: str, pos: int, char: str) -> int:
    pos = _skip(text, pos)
    if not text.startswith(char, pos):
        raise _bad(len(text), "expected %r at offset %d" % (char, pos))
    return pos + 1


def _string_end(text: str, pos: int) -> int:
    """Offset just past the string whose opening quote is at ``pos``."""
    match = _STRING_REST.match(text, pos + 1)
    if match is None:
        raise _bad(len(text), "unterminated string at offset %d" % pos)
    return match.end()


def _key(text: str, pos: int) -> tuple[str, int]:
    pos = _skip(text, pos)
    if not text.startswith('"', pos):
        raise _bad(len(text), "expected a member name at offset %d" % pos)
    end = _string_end(text, pos)
    if end - pos > MAX_KEY_CHARS:
        raise _bad(len(text), "member name longer than %d characters" % MAX_KEY_CHARS)
    return json.loads(text[pos:end]), end


def _value(text: str, pos: int, keep_chars: int) -> tuple[Any, bool, int]:
    """(value, whether it was cut, offset past it). Strings are kept to
    ``keep_chars`` characters (none for members nobody reads); a cut
    base64 text ends on a whole 4-character group so it still decodes."""
    pos = _skip(text, pos)
    if text.startswith('"', pos):
        end = _string_end(text, pos)
        # Escapes ("\/" from some JSON writers) take two characters each,
        # so twice the kept length always holds enough of the text.
        raw = text[pos + 1:min(end - 1, pos + 1 + 2 * keep_chars)]
        raw_cut = pos + 1 + len(raw) < end - 1
        if raw_cut:
            # Never split an escape: cut where the run of backslashes
            # nearest the end starts (an escape is at most 6 characters).
            tail = raw.rfind("\\", max(0, len(raw) - 6))
            if tail >= 0:
                while tail > 0 and raw[tail - 1] == "\\":
                    tail -= 1
                raw = raw[:tail]
        try:
            value = json.loads('"%s"' % raw)
        except ValueError:
            raise _bad(len(text), "bad string at offset %d" % pos) from None
        if raw_cut or len(value) > keep_chars:
            return value[:keep_chars - keep_chars % 4], True, end
        return value, False, end
    match = _SCALAR.match(text, pos)
    if match is None:
        raise _bad(len(text), "expected a string, number, true, false or null at "
                   "offset %d" % pos)
    try:
        return json.loads(match.group()), False, match.end()
    except ValueError:       # "01"
        raise _bad(len(text), "bad number at offset %d" % pos) from None


def _bad(size: int, why: str) -> AgentError:
    return AgentError(ErrorKind.BAD_REPLY, "%s: reply of %d bytes is over the size limit "
                      "and not a readable status (%s)" % (COMMAND, size, why))
