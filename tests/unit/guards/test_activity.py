"""The activity guard: a silent agent in a guest still doing I/O."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.guards.activity import (
    ActivityGuard, Moved, active, moved)
from masakarimonitors_iim.hypervisor.types import Activity
from masakarimonitors_iim.verdict import ProbeResult

A = "11111111-1111-1111-1111-111111111111"
KIB = 1024
SILENT = ProbeResult(ProbeResult.failed("x").verdict, "guest agent did not answer",
                     agent_only=True)
APP_FAILED = ProbeResult.failed("check command exited 1")


def act(at: float, block: int = 0, net: int = 0, cpu: int = 0) -> Activity:
    return Activity(cpu_ns=cpu, block_bytes=block, net_bytes=net, at=at)


@pytest.mark.parametrize("samples, window, expected", [
    ([], 120, None),
    ([act(0, 10)], 120, None),                                  # one sample shows nothing
    ([act(0, 0), act(10, 100, 7)], 120, Moved(100, 7, 10)),
    ([act(0, 0), act(10, 50), act(20, 100)], 120, Moved(100, 0, 20)),
    # only the window counts: the I/O at the start is older than it
    ([act(0, 0), act(100, 1000), act(200, 1000)], 120, Moved(0, 0, 100)),
    ([act(0, 0), act(200, 1000)], 120, None),                   # nothing inside the window
    # counters that went down (new QEMU process) never move backwards
    ([act(0, 500, 500), act(10, 100, 100)], 120, Moved(0, 0, 10)),
    # vCPU time alone is not movement
    ([act(0, cpu=0), act(10, cpu=10**9)], 120, Moved(0, 0, 10)),
])
def test_moved(samples, window, expected):
    assert moved(samples, window) == expected


@pytest.mark.parametrize("m, min_bytes, expected", [
    (None, 64 * KIB, False),
    (Moved(0, 0, 20), 64 * KIB, False),
    (Moved(63 * KIB, 0, 20), 64 * KIB, False),     # kernel chatter
    (Moved(64 * KIB, 0, 20), 64 * KIB, True),
    (Moved(32 * KIB, 32 * KIB, 20), 64 * KIB, True),
    (Moved(0, 1 * 1024 * KIB, 20), 64 * KIB, True),
])
def test_active(m, min_bytes, expected):
    assert active(m, min_bytes) is expected


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def feed(guard: ActivityGuard, clock: Clock, block: int, net: int = 0,
         result: ProbeResult = SILENT, step: float = 10.0) -> str | None:
    """One agent-only FAILED round as the scheduler applies it: sample,
    note, and ask whether the due report is held."""
    clock.t += step
    guard.sample(A, act(clock.t, block, net))
    guard.note(A, result, 0.0)
    return guard.hold(A, "vm-a", result, 0.0)


def test_a_guest_still_writing_is_held_and_reported_once_the_io_stops():
    clock = Clock()
    guard = ActivityGuard(window=30, clock=clock)
    written = 0
    for _ in range(3):
        written += 200 * KIB
        why = feed(guard, clock, written)
    assert why is not None and why.startswith("agent failed, guest active: 400 KiB disk")
    assert "in the last 20 s" in why
    # the I/O stops: held while the window still sees it, then released
    held = [feed(guard, clock, written) is not None for _ in range(4)]
    assert held == [True, True, False, False]


def test_network_sent_counts_like_disk():
    clock = Clock()
    guard = ActivityGuard(window=60, clock=clock)
    feed(guard, clock, 0, 0)
    why = feed(guard, clock, 0, 100 * KIB)
    assert why is not None and "0 KiB disk and 100 KiB network" in why


def test_an_idle_guest_is_never_held():
    clock = Clock()
    guard = ActivityGuard(window=120, clock=clock)
    assert [feed(guard, clock, 4 * KIB) for _ in range(5)] == [None] * 5


def test_application_failures_are_never_held():
    clock = Clock()
    guard = ActivityGuard(window=120, clock=clock)
    feed(guard, clock, 0)
    assert feed(guard, clock, 10 * 1024 * KIB, result=APP_FAILED) is None
    assert guard.watching() == 0       # and they end the agent-only streak


def test_healthy_ends_the_streak_but_unknown_does_not():
    clock = Clock()
    guard = ActivityGuard(window=120, clock=clock)
    feed(guard, clock, 0)
    guard.note(A, ProbeResult.unknown("domain is paused"), 0.0)
    assert feed(guard, clock, 1024 * KIB) is not None
    guard.note(A, ProbeResult.healthy(), 0.0)
    assert guard.watching() == 0
    assert feed(guard, clock, 2048 * KIB) is None     # one sample: no evidence


def test_a_stale_sample_holds_nothing():
    """Sampling failed for longer than the window: the last I/O seen is no
    evidence that the guest works now."""
    clock = Clock()
    guard = ActivityGuard(window=30, clock=clock)
    feed(guard, clock, 0)
    assert feed(guard, clock, 1024 * KIB) is not None
    clock.t += 31
    assert guard.hold(A, "vm-a", SILENT, 0.0) is None


def test_no_sample_no_hold_and_forget_drops_the_samples():
    clock = Clock()
    guard = ActivityGuard(window=120, clock=clock)
    guard.sample(A, None)
    assert guard.hold(A, "vm-a", SILENT, 0.0) is None
    feed(guard, clock, 0)
    guard.forget(A)
    assert guard.watching() == 0


def test_a_restarted_qemu_starts_the_samples_over():
    clock = Clock()
    guard = ActivityGuard(window=120, clock=clock)
    feed(guard, clock, 5000 * KIB)
    assert feed(guard, clock, 10 * KIB) is None       # counters reset: one sample left
    assert feed(guard, clock, 200 * KIB) is not None
