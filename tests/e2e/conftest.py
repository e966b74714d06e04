"""Fixtures for end-to-end tests against the real testbed (tools/testbed).

The testbed is started once per session. If it cannot be set up or started
the fixture raises, so every test using it errors: an e2e run that cannot
build its world must fail loudly, never skip.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from testbed import Testbed  # noqa: E402
from testbed.monitor_process import DomainRow, MonitorProcess, OutboxRow  # noqa: E402

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


# -- monitor end-to-end tests: one MonitorProcess and fresh guests per test ----

#: TCG guests on 2 cores boot in 3-4 s alone; be generous, CI machines vary.
BOOT_TIMEOUT = 180.0
#: Failure injected -> notification processed by masakari-engine.
NOTIFY_TIMEOUT = 120.0
#: Detection window of the default monitor config (interval 1 s x threshold 3,
#: plus one round's timeout of 1 s).
DETECTION_WINDOW = 1 * 3 + 1
#: Extra time allowed when showing that nothing happens.
MARGIN = 6.0
#: Masakari notification states after which the engine is done with it.
TERMINAL = ("finished", "ignored", "error", "failed")
#: Exactly what a monitor notification must carry.
EXPECTED_EVENT = {"event": "LIFECYCLE", "vir_domain_event": "STOPPED_FAILED"}


@dataclasses.dataclass(frozen=True)
class Guest:
    name: str
    uuid: str


def poll(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    """Call ``probe`` until it returns something truthy; return that.

    On timeout the last value (or exception) is in the assertion message.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError:
            raise
        except Exception as exc:  # a transient error while polling is a value too
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s; last seen: {last!r}")
        time.sleep(interval)


def assert_alive(mon: MonitorProcess) -> None:
    """A started monitor must not have exited: status would only show the
    journal it left behind."""
    if mon.proc is not None:
        assert mon.running, f"masakari-iim exited with {mon.proc.returncode}; log: {mon.log_path}"


class E2E:
    """What one monitor e2e test needs: guests and monitors it owns (cleaned
    up at teardown), and the Masakari / Nova stand-in / libvirt view of what
    happened since the test began."""

    BOOT_TIMEOUT = BOOT_TIMEOUT
    DETECTION_WINDOW = DETECTION_WINDOW
    MARGIN = MARGIN

    def __init__(self, tb: Testbed, test_name: str, timings: dict[str, float]) -> None:
        self.tb = tb
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.timings = timings
        self._guests: list[str] = []
        self._monitors: list[MonitorProcess] = []
        self._api_stopped = False
        #: Notifications Masakari had before this test: everything else is ours.
        self.baseline = {n["notification_uuid"] for n in tb.notifications()}

    # -- guests ---------------------------------------------------------------
    def guest(self, name: str, *, wait_agent: bool = True, **kwargs: Any) -> Guest:
        """Create and boot a guest (``kwargs`` as for Testbed.create_guest);
        wait for its agent unless told not to. Destroyed at teardown."""
        started = time.monotonic()
        uuid = self.tb.create_guest(name, **kwargs)
        self._guests.append(name)
        if wait_agent:
            self.tb.wait_agent(name, timeout=BOOT_TIMEOUT)
            self.timings[f"{self.test_name}: boot {name}"] = time.monotonic() - started
        return Guest(name, uuid)

    def guest_without_agent_channel(self, name: str) -> Guest:
        """A guest whose domain has no org.qemu.guest_agent.0 channel at all
        (the testbed always adds one, so it is removed and the domain rebooted)."""
        import libvirt

        guest = self.guest(name, wait_agent=False, agent=False)
        conn = libvirt.open(self.tb.libvirt_uri)
        try:
            dom = conn.lookupByUUIDString(guest.uuid)
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            stripped = re.sub(r"\s*<channel type=.unix.>.*?</channel>", "", xml, flags=re.S)
            assert "org.qemu.guest_agent.0" not in stripped, stripped
            dom.destroy()
            conn.defineXML(stripped).create()
            assert "guest_agent" not in conn.lookupByUUIDString(guest.uuid).XMLDesc(0)
        finally:
            conn.close()
        return guest

    # -- monitors -------------------------------------------------------------
    def monitor(
        self,
        *,
        policy: str | None = None,
        options: dict[str, dict[str, str]] | None = None,
        start: bool = True,
    ) -> MonitorProcess:
        """A masakari-iim of this test, with its own work directory (kept
        with the testbed's when the session fails). Stopped at teardown."""
        workdir = self.tb.workdir / "monitors" / f"{self.test_name}-{len(self._monitors) + 1}"
        mon = MonitorProcess(self.tb, workdir, options=options, policy=policy)
        self._monitors.append(mon)
        if start:
            mon.start()
        return mon

    def wait_domain(
        self,
        mon: MonitorProcess,
        guest: Guest,
        journal: str | None = None,
        verdict: str | None = None,
        reason: str | None = None,
        timeout: float = BOOT_TIMEOUT,
    ) -> DomainRow:
        """Poll ``masakari-iim status`` until the guest's row shows all of
        the given journal state, verdict and reason (substring; "" means empty)."""

        def check() -> DomainRow | str:
            assert_alive(mon)
            row = mon.status_report().domain(guest.uuid)
            if row is None:
                return ""
            if journal is not None and row.journal != journal:
                return ""
            if verdict is not None and row.verdict != verdict:
                return ""
            if reason is not None and (reason not in row.reason if reason else row.reason):
                return ""
            return row

        want = f"journal={journal} verdict={verdict} reason~{reason!r}"
        return poll(f"{guest.name} in status with {want}", check, timeout, interval=0.2)

    def wait_outbox(
        self,
        mon: MonitorProcess,
        guest: Guest,
        status: str,
        min_attempts: int = 1,
        timeout: float = 60,
    ) -> OutboxRow:
        def check() -> OutboxRow | None:
            assert_alive(mon)
            rows = mon.status_report().outbox_for(guest.uuid)
            assert len(rows) <= 1, f"more than one outbox row for {guest.uuid}: {rows}"
            if rows and rows[0].status == status and rows[0].attempts >= min_attempts:
                return rows[0]
            return None

        return poll(
            f"outbox row for {guest.name} {status} after >= {min_attempts} attempts",
            check,
            timeout,
        )

    # -- Masakari, the Nova stand-in -----------------------------------------
    def new_notifications(self) -> list[dict[str, Any]]:
        """Notifications Masakari got since the test began."""
        return [n for n in self.tb.notifications() if n["notification_uuid"] not in self.baseline]

    def notifications_for(self, guest: Guest) -> list[dict[str, Any]]:
        return [
            n for n in self.new_notifications() if n["payload"].get("instance_uuid") == guest.uuid
        ]

    def assert_no_new_notifications(self) -> None:
        new = self.new_notifications()
        assert new == [], f"unexpected notifications: {new}"

    def nova_actions_for(self, guest: Guest) -> list[tuple[str, str]]:
        return [
            (a["action"], a["result"]) for a in self.tb.nova_actions() if a["server"] == guest.uuid
        ]

    def masakari_host_name(self, host_uuid: str) -> str:
        url = f"{self.tb.masakari_endpoint}/segments/{self.tb.segment_uuid}/hosts/{host_uuid}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)["host"]["name"]

    def stop_masakari_api(self) -> None:
        self._api_stopped = True
        self.tb.stop_masakari_api()

    def start_masakari_api(self) -> None:
        self.tb.start_masakari_api()
        self._api_stopped = False

    def quiet(self, seconds: float, *guests: Guest) -> None:
        """Wait ``seconds`` while nothing may happen: fail as soon as Masakari
        gets a notification or the Nova stand-in is asked to touch a guest."""
        deadline = time.monotonic() + seconds
        while True:
            self.assert_no_new_notifications()
            for guest in guests:
                assert self.nova_actions_for(guest) == [], guest
            if time.monotonic() >= deadline:
                return
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def wait_recovered(
        self, mon: MonitorProcess, guest: Guest, pid_before: int | None, since: float | None = None
    ) -> dict[str, Any]:
        """The whole chain after a failure of ``guest``: exactly one VM
        notification in Masakari, for this instance and the testbed host,
        processed to ``finished``; the Nova stand-in stopped and started the
        domain (new QEMU process); the monitor sees the guest HEALTHY again and
        shows the notification delivered. Returns the notification."""

        def processed() -> list[dict[str, Any]]:
            notes = self.notifications_for(guest)
            return notes if notes and all(n["status"] in TERMINAL for n in notes) else []

        notes = poll(
            f"notification for {guest.name} processed by the engine",
            processed,
            NOTIFY_TIMEOUT,
            interval=0.5,
        )
        if since is not None:
            self.timings[f"{self.test_name}: failure -> notification processed"] = (
                time.monotonic() - since
            )
        assert len(notes) == 1, f"expected one notification, got {notes}"
        note = notes[0]
        assert note["type"] == "VM"
        assert note["payload"] == dict(EXPECTED_EVENT, instance_uuid=guest.uuid)
        assert note["source_host_uuid"] == self.tb.host_uuid
        assert self.masakari_host_name(note["source_host_uuid"]) == self.tb.hostname
        assert note["status"] == "finished", note
        assert self.new_notifications() == [note]

        assert self.nova_actions_for(guest) == [("stop", "202"), ("start", "202")]
        poll(
            f"{guest.name} running as a new QEMU process",
            lambda: self.tb.qemu_pid(guest.name) not in (None, pid_before),
            60,
        )
        assert self.tb.domain_state(guest.name) == "running"

        self.wait_domain(mon, guest, journal="HEALTHY", verdict="HEALTHY")
        (row,) = mon.status_report().outbox_for(guest.uuid)
        assert (row.status, row.episode) == ("delivered", 1), row
        # The monitor's outbox row is the very notification Masakari holds.
        assert row.generated == note["generated_time"], (row, note)
        if since is not None:
            self.timings[f"{self.test_name}: failure -> guest healthy again"] = (
                time.monotonic() - since
            )
        # Still exactly one, now that the guest has been up and healthy a while.
        assert self.new_notifications() == [note]
        return note

    # -- teardown -------------------------------------------------------------
    def close(self) -> None:
        problems = []
        for mon in self._monitors:
            if not mon.running:
                continue
            try:
                code = mon.stop(timeout=10)
            except Exception as exc:
                problems.append(f"{mon.workdir}: SIGTERM did not stop it: {exc}")
                continue
            if code != 0 or (mon.last_stop_seconds or 0) >= 5:
                problems.append(
                    f"{mon.workdir}: SIGTERM -> exit {code} after {mon.last_stop_seconds:.1f}s"
                    " (want 0 within 5 s)"
                )
        if self._api_stopped:
            self.start_masakari_api()
        for name in self._guests:
            try:
                if self.tb.domain_state(name) != "shut-off":
                    self.tb.destroy(name)
            except Exception as exc:
                problems.append(f"cannot destroy guest {name}: {exc}")
        assert not problems, "; ".join(problems)


@pytest.fixture
def e2e(testbed: Testbed, request: pytest.FixtureRequest, timings: dict) -> Iterator[E2E]:
    helper = E2E(testbed, request.node.name, timings)
    try:
        yield helper
    finally:
        helper.close()
