"""The one text cleaner.

Everything that ends up in a log line, a status reason or an outbox row
passes through :func:`one_line`: guest output and agent errors (untrusted),
libvirt and HTTP messages (which may quote the guest or a server),
exception texts. One rule for all of them, so an operator never meets a
raw newline, an escape sequence or a megabyte of text in a log.
"""
from __future__ import annotations

import unicodedata
from typing import Any

#: Default cap, in characters, of one cleaned text.
LIMIT = 300


def one_line(text: Any, limit: int = LIMIT) -> str:
    """``text`` as one bounded, printable line.

    Bytes are decoded as UTF-8 (bad bytes become U+FFFD), anything else
    goes through ``str``. Runs of whitespace become one space; every other
    control or format character (ESC, NUL, bidi overrides) becomes ``?``,
    so a guest can neither forge log lines nor hide text on a terminal.
    Text longer than ``limit`` is cut and ends in ``...`` (the result is
    never longer than ``limit``). Only the first ``4 * limit`` characters
    are looked at, so a huge input costs no more than a small one.
    """
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text[:4 * limit].decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = str(text)
    head = text[:4 * limit]
    out = []
    for ch in head:
        if ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch)[0] == "C":
            out.append("?")
        else:
            out.append(ch)
    flat = " ".join("".join(out).split())
    if len(flat) > limit or len(text) > len(head):
        flat = flat[:max(0, limit - 3)].rstrip() + "..."
    return flat
