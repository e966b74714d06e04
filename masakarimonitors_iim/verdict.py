"""The words every room uses to talk about a guest's health.

Kept in one small module with no I/O so the probes, the journal and the
status output agree on them without importing each other.
"""
from __future__ import annotations

import dataclasses
import enum


class Verdict(str, enum.Enum):
    """Outcome of one probe round for one domain.

    UNKNOWN is deliberately separate from FAILED: a paused, migrating or
    unreachable domain tells us nothing about the guest, and counting it
    as a failure would restart healthy VMs.
    """

    HEALTHY = "HEALTHY"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What a probe concluded, and why, in words an operator can read.

    ``reset_requested`` is set when the guest itself asked for recovery
    (an application-requested reset); the journal then reports at once
    instead of waiting for the failure threshold.
    """

    verdict: Verdict
    reason: str = ""
    reset_requested: bool = False

    @classmethod
    def healthy(cls, reason: str = "") -> "ProbeResult":
        return cls(Verdict.HEALTHY, reason)

    @classmethod
    def failed(cls, reason: str) -> "ProbeResult":
        return cls(Verdict.FAILED, reason)

    @classmethod
    def unknown(cls, reason: str) -> "ProbeResult":
        return cls(Verdict.UNKNOWN, reason)


def combine(results: list[ProbeResult]) -> ProbeResult:
    """Fold several probes' results for one domain into one verdict.

    Any FAILED wins: the application is down even if the agent answers.
    Otherwise one HEALTHY probe makes the round HEALTHY, so a probe that
    cannot tell (its RPC blocked, its heartbeat not written yet) never
    hides what the others see: were UNKNOWN to win here, a guest whose
    exec probe is blocked would never leave discovery and its ping
    failures would never count. Only all-UNKNOWN is UNKNOWN. Reasons of
    every probe that did not say HEALTHY are kept; a reset request from
    any probe is kept.
    """
    if not results:
        return ProbeResult.unknown("no probe ran")
    reset = any(r.reset_requested for r in results)
    if any(r.verdict is Verdict.FAILED for r in results):
        verdict = Verdict.FAILED
        shown = [r for r in results if r.verdict is Verdict.FAILED]
    elif any(r.verdict is Verdict.HEALTHY for r in results):
        verdict = Verdict.HEALTHY
        shown = [r for r in results if r.verdict is Verdict.UNKNOWN]
    else:
        verdict = Verdict.UNKNOWN
        shown = results
    return ProbeResult(verdict, "; ".join(r.reason for r in shown if r.reason), reset)
