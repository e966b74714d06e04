"""An agent fake that replays what real libvirt + qemu-ga answered.

``tests/data/recorded-libvirt-replies.json`` is a copy of the testbed recipe's
recording (libvirt-python's errors and agent replies on real TCG guests).
Errors are replayed from it; reply shapes it does not hold (a finished
guest-exec, guest-file-read) follow the qemu-ga schema.

``agent_error`` classifies a recorded libvirt error with the hypervisor
layer's own (pure) classifier: the probes only ever see the resulting
AgentError.
"""
from __future__ import annotations

import base64
import json
import pathlib
from typing import Any, Callable

import pytest

from masakarimonitors_iim.hypervisor import errors
from masakarimonitors_iim.hypervisor.types import AgentError

DATA = pathlib.Path(__file__).parents[2] / "data" / "recorded-libvirt-replies.json"
RECORDED = json.loads(DATA.read_text())["failures"]


def agent_error(entry: dict) -> AgentError:
    """A recorded libvirt error as the hypervisor layer would raise it."""
    err = entry.get("err", entry)
    code, msg = err["code"], err["msg"]
    kind = errors.classify(code, err["domain"], msg)
    return AgentError(kind, msg, code=code, domain=err["domain"])


def agent_command_failed(command: str, detail: str) -> AgentError:
    """An agent-side error worded as libvirt words the recorded ones."""
    return agent_error({"code": 1, "domain": 10, "msg": "internal error: unable to execute "
                        "QEMU agent command '%s': %s" % (command, detail)})


class FakeClock:
    """Monotonic and wall clocks that only move when told to (or slept)."""

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self.mono = 1000.0
        self.wall_offset = wall - self.mono
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.mono + self.wall_offset

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.slept.append(seconds)
        self.mono += seconds

    def advance(self, seconds: float) -> None:
        self.mono += seconds

    def attach(self, probe: Any) -> Any:
        probe._clock = self.monotonic
        probe._wallclock = self.time
        probe._sleep = self.sleep
        return probe


Response = Any  # a reply, an AgentError to raise, or a callable(args) -> either


class FakeAgent:
    """An AgentChannel that answers each command from a script.

    ``script(name, r1, r2, ...)`` answers successive calls with r1, r2,
    ... and repeats the last one. Each call costs ``latency`` seconds of
    fake time, like a healthy agent's ~2 ms.
    """

    domain_uuid = "7b1f0b3e-3a4c-4d5e-8f9a-0b1c2d3e4f50"

    def __init__(self, clock: FakeClock, latency: float = 0.002) -> None:
        self.clock = clock
        self.latency = latency
        self.calls: list[tuple[str, Any, float]] = []
        self._scripts: dict[str, list[Response]] = {}

    def script(self, name: str, *responses: Response) -> None:
        self._scripts[name] = list(responses)

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 2.0) -> Any:
        self.calls.append((name, arguments, timeout))
        self.clock.advance(self.latency)
        script = self._scripts.get(name)
        if not script:
            raise agent_error(RECORDED["unknown_command"])
        response = script.pop(0) if len(script) > 1 else script[0]
        if callable(response):
            response = response(arguments)
        if isinstance(response, AgentError):
            raise response
        return response

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def calls_to(self, name: str) -> list[Any]:
        return [c[1] for c in self.calls if c[0] == name]


class GuestFiles:
    """qemu-ga's guest-file-* commands over an in-memory file table.

    Tracks open handles so a test can check that the probe closed every
    one it opened, whatever happened in between.
    """

    def __init__(self, agent: FakeAgent) -> None:
        self.files: dict[str, bytes] = {}
        self.open_handles: dict[int, list] = {}
        self.read_error: AgentError | None = None
        self.close_error: AgentError | None = None
        self.open_error: AgentError | None = None
        self.opened = 0
        self._next = 1000
        agent.script("guest-file-open", self._open)
        agent.script("guest-file-read", self._read)
        agent.script("guest-file-close", self._close)

    def _open(self, args: dict) -> Any:
        if self.open_error is not None:
            return self.open_error
        path = args["path"]
        assert args.get("mode", "r") == "r"
        if path not in self.files:
            return agent_command_failed(
                "guest-file-open",
                "failed to open file '%s' (mode: 'r'): No such file or directory" % path)
        self._next += 1
        self.opened += 1
        self.open_handles[self._next] = [self.files[path], 0]
        return self._next

    def _read(self, args: dict) -> Any:
        if self.read_error is not None:
            return self.read_error
        entry = self.open_handles.get(args["handle"])
        if entry is None:
            return agent_command_failed("guest-file-read", "Invalid parameter 'handle'")
        data, pos = entry
        chunk = data[pos:pos + args.get("count", 4096)]
        entry[1] = pos + len(chunk)
        return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(),
                "eof": entry[1] >= len(data)}

    def _close(self, args: dict) -> Any:
        if self.close_error is not None:
            return self.close_error
        if self.open_handles.pop(args["handle"], None) is None:
            return agent_command_failed("guest-file-close", "Invalid parameter 'handle'")
        return {}


@pytest.fixture
def recorded() -> dict:
    return RECORDED


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def agent(clock: FakeClock) -> FakeAgent:
    return FakeAgent(clock)


@pytest.fixture
def guest_files(agent: FakeAgent) -> GuestFiles:
    return GuestFiles(agent)


def replay_error(key: str, index: int | None = None) -> AgentError:
    """replay_error("blocked_guest_exec") -> the recorded error as an
    AgentError; ``index`` picks one of a recorded sequence."""
    entry = RECORDED[key] if index is None else RECORDED[key][index]
    return agent_error(entry)


@pytest.fixture
def replay() -> Callable[..., AgentError]:
    return replay_error


@pytest.fixture
def command_failed() -> Callable[[str, str], AgentError]:
    return agent_command_failed
