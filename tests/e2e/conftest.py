"""Fixtures for end-to-end tests against the real testbed (tools/testbed).

The testbed is started once per session. If it cannot be set up or started
the fixture raises, so every test using it errors: an e2e run that cannot
build its world must fail loudly, never skip.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from testbed import Testbed  # noqa: E402

#: Durations worth watching in CI logs, filled by fixtures and tests and
#: printed in the terminal summary.
TIMINGS: dict[str, float] = {}


#: Set when the session's testbed work directory is kept for a post-mortem.
KEPT_WORKDIR: list[Path] = []


@pytest.fixture(scope="session")
def testbed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    # Not pytest's tmp_path: other pytest runs on the machine prune those,
    # and the logs in here are what explains a failure.
    workdir = Path(tempfile.mkdtemp(prefix="iim-testbed-"))
    tb = Testbed(workdir)
    try:
        tb.setup()
        TIMINGS["testbed setup"] = tb.timings["setup"]
        tb.start()
        TIMINGS["testbed start"] = tb.timings["start"]
        yield tb
        started = time.monotonic()
        tb.stop()  # raises if any process survived
        TIMINGS["testbed stop"] = time.monotonic() - started
    except BaseException:
        KEPT_WORKDIR.append(workdir)
        tb.stop()
        raise
    if request.session.testsfailed:
        KEPT_WORKDIR.append(workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    return TIMINGS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "testbed timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f}s")
    for workdir in KEPT_WORKDIR:
        terminalreporter.write_line(f"testbed work directory (logs) kept: {workdir}")
