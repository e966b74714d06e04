"""What the functional tests share: the real ``masakari-iim`` binary,
waiting for it, and reading its log."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

BIN = os.path.join(os.path.dirname(sys.executable), "masakari-iim")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until ``predicate`` returns something true, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def log_text(tmp_path: Path) -> str:
    try:
        return (tmp_path / "iim.log").read_text()
    except FileNotFoundError:
        return ""
