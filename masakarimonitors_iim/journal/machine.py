"""The per-domain failure state machine, as pure functions.

No I/O and no clock reads: ``now`` is always passed in, so the transition
table can be tested exhaustively and replayed after a restart with the
same outcome. The store persists what these functions return; the caller
turns a :class:`Report` into an outbox row in the same transaction.

States::

    DISCOVERY --HEALTHY x success--> HEALTHY --FAILED--> FAILING
        ^                               ^  ^                |
        |                               |  +----HEALTHY-----+
     restart/stop                       |                   | FAILED x failure
     (from any state)      HEALTHY x success                v
                                        +------------- REPORTED  (one Report)

UNKNOWN never moves anything. A reset requested by the guest jumps from
DISCOVERY, HEALTHY or FAILING straight to REPORTED.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

from masakarimonitors_iim.verdict import ProbeResult
from masakarimonitors_iim.verdict import Verdict


class State(str, enum.Enum):
    """Where a domain stands in its current failure episode.

    DISCOVERY means "not yet proven healthy since it (re)started": a guest
    that is booting, or has no agent installed, fails its probes without
    being broken, so it is never reported from here.
    """

    DISCOVERY = "DISCOVERY"
    HEALTHY = "HEALTHY"
    FAILING = "FAILING"
    REPORTED = "REPORTED"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """How patient the machine is, per domain (policy decides the numbers)."""

    failure: int
    success: int

    def __post_init__(self) -> None:
        # A threshold of 0 would report (or recover) on no evidence at all.
        if self.failure < 1 or self.success < 1:
            raise ValueError(
                "thresholds must be >= 1 (failure=%r, success=%r)"
                % (self.failure, self.success))


@dataclasses.dataclass(frozen=True)
class Record:
    """Everything the journal knows about one domain.

    ``failures``/``successes`` are the current consecutive FAILED/HEALTHY
    streaks (UNKNOWN neither extends nor breaks them). ``episode`` counts
    reported episodes over the domain's life and is the outbox's
    idempotency key together with the uuid. ``first_failure_at`` is when
    the current failure streak began (kept while REPORTED, for status).
    ``seen_healthy`` is whether this domain was ever proven healthy: it
    lets status tell "booting again" from "never answered".
    """

    uuid: str
    name: str
    state: State
    failures: int = 0
    successes: int = 0
    episode: int = 0
    last_verdict: Verdict | None = None
    last_reason: str = ""
    since: float = 0.0
    first_failure_at: float | None = None
    seen_healthy: bool = False
    updated_at: float = 0.0


@dataclasses.dataclass(frozen=True)
class Report:
    """The machine's decision that episode ``episode`` must be notified.

    ``detected_at`` is when the threshold was crossed (or the reset was
    requested); it becomes the notification's ``generated_time`` and must
    not change across delivery retries.
    """

    episode: int
    detected_at: float
    reason: str


def new_record(uuid: str, name: str, now: float) -> Record:
    """A domain we have just found: nothing proven yet."""
    return Record(uuid=uuid, name=name, state=State.DISCOVERY,
                  since=now, updated_at=now)


def _enter(rec: Record, state: State, now: float, **changes: Any) -> Record:
    """Replace fields, moving ``since`` only when the state really changes."""
    since = now if state is not rec.state else rec.since
    return dataclasses.replace(rec, state=state, since=since, updated_at=now,
                               **changes)


def _report(rec: Record, now: float, reason: str) -> tuple[Record, Report]:
    episode = rec.episode + 1
    first = rec.first_failure_at if rec.first_failure_at is not None else now
    new = _enter(rec, State.REPORTED, now, episode=episode,
                 first_failure_at=first)
    return new, Report(episode=episode, detected_at=now, reason=reason)


def on_result(rec: Record, result: ProbeResult, thresholds: Thresholds,
              now: float) -> tuple[Record, Report | None]:
    """Fold one probe round into the record; return a Report at most once per episode.

    The Report is returned exactly on the transition into REPORTED, so a
    caller that saves the record and the notification together can never
    emit two for one episode, whatever it replays.
    """
    rec = dataclasses.replace(rec, last_verdict=result.verdict,
                              last_reason=result.reason, updated_at=now)

    if result.reset_requested and rec.state is not State.REPORTED:
        # The application itself asked for recovery: no threshold to wait for.
        return _report(rec, now, result.reason or "guest requested a reset")

    if result.verdict is Verdict.UNKNOWN:
        return rec, None

    if result.verdict is Verdict.HEALTHY:
        return _on_healthy(rec, thresholds, now), None

    return _on_failed(rec, result, thresholds, now)


def _on_healthy(rec: Record, thresholds: Thresholds, now: float) -> Record:
    successes = rec.successes + 1
    if rec.state is State.FAILING:
        # One good answer ends a streak that never reached the threshold.
        return _enter(rec, State.HEALTHY, now, failures=0, successes=successes,
                      first_failure_at=None, seen_healthy=True)
    if rec.state is State.DISCOVERY and successes < thresholds.success:
        return _enter(rec, rec.state, now, failures=0, successes=successes,
                      first_failure_at=None)
    if rec.state is State.REPORTED and successes < thresholds.success:
        # Not recovered yet: the episode (and when it began) still stands.
        return _enter(rec, rec.state, now, failures=0, successes=successes)
    # DISCOVERY/REPORTED proven healthy, or HEALTHY staying so.
    return _enter(rec, State.HEALTHY, now, failures=0, successes=successes,
                  first_failure_at=None, seen_healthy=True)


def _on_failed(rec: Record, result: ProbeResult, thresholds: Thresholds,
               now: float) -> tuple[Record, Report | None]:
    failures = rec.failures + 1
    first = rec.first_failure_at if rec.first_failure_at is not None else now
    if rec.state in (State.DISCOVERY, State.REPORTED):
        # Never proven healthy, or already reported: count, never report.
        return _enter(rec, rec.state, now, failures=failures, successes=0,
                      first_failure_at=first), None
    rec = dataclasses.replace(rec, failures=failures, successes=0,
                              first_failure_at=first)
    if failures >= thresholds.failure:
        return _report(rec, now, result.reason or "probe failed")
    return _enter(rec, State.FAILING, now), None


def on_restarted(rec: Record, now: float) -> Record:
    """The domain (re)started: whatever it did before says nothing about now.

    Used for libvirt STARTED/REBOOTED/RESUMED. The episode counter is kept
    so a later failure is a new, distinct outbox row.
    """
    return _to_discovery(rec, now)


def on_stopped(rec: Record, now: float) -> Record:
    """The domain stopped cleanly: forget the streaks, keep the episode count."""
    return _to_discovery(rec, now)


def _to_discovery(rec: Record, now: float) -> Record:
    return dataclasses.replace(rec, state=State.DISCOVERY, since=now,
                               updated_at=now, failures=0, successes=0,
                               first_failure_at=None)
