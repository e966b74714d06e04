"""The one "log once until it changes" helper.

A daemon meets persistent conditions (libvirt down, a disk full, one odd
domain): logging them every iteration buries everything else, logging
them never leaves the operator guessing. :class:`LogOnce` says a
condition once per distinct message, and once more when it clears.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Hashable, Iterable


class LogOnce:
    """Tracks conditions by key (one object per kind of condition).

    Thread-safe; a key is anything hashable (a domain uuid, or None for a
    single condition).
    """

    def __init__(self, logger: Any) -> None:
        self._log = logger
        self._active: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def problem(self, message: str, *args: Any, key: Hashable = None,
                level: int = logging.WARNING, exc_info: bool = False) -> bool:
        """Log ``message % args`` unless this key's condition was already
        logged with the same text; returns whether it was logged."""
        text = message % args if args else message
        with self._lock:
            if self._active.get(key) == text:
                return False
            self._active[key] = text
        self._log.log(level, text, exc_info=exc_info)
        return True

    def resolved(self, message: str | None = None, *args: Any,
                 key: Hashable = None, level: int = logging.INFO) -> bool:
        """The condition of ``key`` cleared: log ``message`` (if given) when
        it had been logged as a problem; returns whether it was active."""
        with self._lock:
            was = self._active.pop(key, None) is not None
        if was and message:
            self._log.log(level, message % args if args else message)
        return was

    def active(self, key: Hashable = None) -> bool:
        with self._lock:
            return key in self._active

    def keep_only(self, keys: Iterable[Hashable]) -> None:
        """Forget conditions of keys no longer around (domains gone), so
        the bookkeeping stays as small as what it tracks."""
        keep = set(keys)
        with self._lock:
            for key in [k for k in self._active if k not in keep]:
                del self._active[key]
