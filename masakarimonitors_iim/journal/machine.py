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
DISCOVERY, HEALTHY or FAILING straight to REPORTED, and so does the
failure threshold's FAILED round in a row in DISCOVERY past the boot
deadline of a guest that was healthy in an earlier boot (it booted into
a hang). A restart while still in DISCOVERY since a boot continues that
boot (a reboot loop keeps its first boot's deadline; see on_restarted).

A due report may be *held* by a guard (:mod:`masakarimonitors_iim.guards`):
:func:`on_held` then keeps the domain FAILING with its streak (a boot past
its deadline stays DISCOVERY, so it keeps its boot's reason) and the
reason in ``Record.held``, and the next FAILED round is due again.
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
    #: seconds after a boot (entering DISCOVERY) by which a guest proven
    #: healthy in an earlier boot must be healthy again; None: no deadline
    boot_deadline: float | None = None
    #: also report a guest never seen healthy past the deadline
    boot_report_always: bool = False

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
    ``held`` is why a due report is held by a guard ("" when none); it is
    cleared when the streak ends or the report goes out. ``boot_id``
    names the boot the journal last saw ("" unknown): a different one is
    a restart, even one the monitor was not running to see. ``boots``
    counts the boots of the current DISCOVERY (0: it began with a stop,
    or is unknown); more than one is a reboot loop, whose deadline still
    runs from the first boot's ``since``.
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
    held: str = ""
    boot_id: str = ""
    boots: int = 0


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
                  since=now, updated_at=now, boots=1)


def _enter(rec: Record, state: State, now: float, **changes: Any) -> Record:
    """Replace fields, moving ``since`` only when the state really changes."""
    since = now if state is not rec.state else rec.since
    return dataclasses.replace(rec, state=state, since=since, updated_at=now,
                               **changes)


def _report(rec: Record, now: float, reason: str) -> tuple[Record, Report]:
    episode = rec.episode + 1
    first = rec.first_failure_at if rec.first_failure_at is not None else now
    new = _enter(rec, State.REPORTED, now, episode=episode,
                 first_failure_at=first, held="")
    return new, Report(episode=episode, detected_at=now, reason=reason)


def on_result(rec: Record, result: ProbeResult, thresholds: Thresholds,
              now: float) -> tuple[Record, Report | None]:
    """Fold one probe round into the record; return a Report at most once per episode.

    The Report is returned exactly on the transition into REPORTED, so a
    caller that saves the record and the notification together can never
    emit two for one episode, whatever it replays.
    """
    new, report = _fold(rec, result, thresholds, now)
    if new.held and (new.state not in (State.FAILING, State.DISCOVERY)
                     or result.verdict is Verdict.HEALTHY):
        new = dataclasses.replace(new, held="")   # the held streak ended
    return new, report


def on_held(before: Record, due: Record, reason: str) -> Record:
    """A guard holds the report that turned ``before`` into ``due``.

    Nothing is reported and the episode number stays: the domain is
    FAILING with the streak ``due`` counted, so the next FAILED round is
    due again and asks the guards again, and a HEALTHY one ends it as any
    streak. ``reason`` is kept for status.

    A domain in DISCOVERY (a boot past its deadline, or a reset asked
    for while booting) stays there, with the boot's ``since``: its next
    FAILED round is due again *as a boot*, so the report that finally
    goes out still says the guest did not come up after its boot, and
    status keeps showing "never came up".
    """
    if before.state is State.DISCOVERY:
        return dataclasses.replace(due, state=State.DISCOVERY, episode=before.episode,
                                   since=before.since, held=reason)
    since = before.since if before.state is State.FAILING else due.updated_at
    return dataclasses.replace(due, state=State.FAILING, episode=before.episode,
                               since=since, held=reason)


def _fold(rec: Record, result: ProbeResult, thresholds: Thresholds,
          now: float) -> tuple[Record, Report | None]:
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
    if (rec.state is State.DISCOVERY and failures >= thresholds.failure
            and _boot_overdue(rec, thresholds, now)):
        rec = dataclasses.replace(rec, failures=failures, successes=0,
                                  first_failure_at=first)
        return _report(rec, now, boot_reason(rec, result, thresholds))
    if rec.state in (State.DISCOVERY, State.REPORTED):
        # Booting (within its deadline), never proven healthy, or already
        # reported: count, never report.
        return _enter(rec, rec.state, now, failures=failures, successes=0,
                      first_failure_at=first), None
    rec = dataclasses.replace(rec, failures=failures, successes=0,
                              first_failure_at=first)
    if failures >= thresholds.failure:
        return _report(rec, now, result.reason or "probe failed")
    return _enter(rec, State.FAILING, now), None


def _boot_overdue(rec: Record, thresholds: Thresholds, now: float) -> bool:
    """A FAILED round in DISCOVERY past the boot deadline: the guest booted
    into a hang (or its agent never came back). Only FAILED rounds count:
    UNKNOWN (paused, libvirt away, within a grace) says nothing, and
    ``since`` of DISCOVERY is when the boot was seen. The caller also
    asks for a failure threshold's worth of FAILED rounds in a row: a
    guest hung since its boot has far more by the deadline, while one
    that answered but has not yet met ``success`` (raised for an
    application that flaps while starting) must not be reported on one
    flap."""
    if thresholds.boot_deadline is None:
        return False
    if not (rec.seen_healthy or thresholds.boot_report_always):
        return False
    return now - rec.since >= thresholds.boot_deadline


def boot_reason(rec: Record, result: ProbeResult, thresholds: Thresholds) -> str:
    """Why a boot is reported, in words that say it was the boot."""
    deadline = thresholds.boot_deadline or 0.0
    if result.agent_only:
        what = "guest agent did not answer within %g s of boot" % deadline
    else:
        what = "guest did not become healthy within %g s of boot (%s)" % (
            deadline, result.reason or "probe failed")
    if rec.seen_healthy:
        return what + "; it answered in an earlier boot"
    return what + "; it never answered (boot_report: always)"


def on_restarted(rec: Record, now: float) -> Record:
    """The domain (re)started: whatever it did before says nothing about now.

    Used for libvirt STARTED/REBOOTED and a new boot id in a listing. The
    episode counter is kept so a later failure is a new, distinct outbox
    row. A restart of a boot not yet proven healthy (DISCOVERY that began
    with a boot, not a stop) continues that boot: a guest resetting
    itself (panic=N, a watchdog) faster than its deadline would otherwise
    never reach it. Its ``since`` and FAILED streak stand; only a success
    streak, which must be one boot's, starts again.
    """
    if rec.state is State.DISCOVERY and rec.boots > 0:
        return dataclasses.replace(rec, updated_at=now, successes=0, held="",
                                   boots=rec.boots + 1)
    return dataclasses.replace(_to_discovery(rec, now), boots=1)


def on_stopped(rec: Record, now: float) -> Record:
    """The domain stopped cleanly: forget the streaks, keep the episode count.
    ``boots`` 0: the next start (Masakari's recovery, an operator's) is a
    first boot, never a loop."""
    return dataclasses.replace(_to_discovery(rec, now), boots=0)


def _to_discovery(rec: Record, now: float) -> Record:
    return dataclasses.replace(rec, state=State.DISCOVERY, since=now,
                               updated_at=now, failures=0, successes=0,
                               first_failure_at=None, held="")


def on_watched_again(rec: Record, boot_id: str, stale_after: float | None,
                     now: float) -> Record:
    """The monitor (re)starts watching a domain it has a record of.

    A different boot than the journal's (both known) is a restart the
    monitor did not see: DISCOVERY with a first boot (what the guest did
    meanwhile is unknown, so no loop is continued), and so is a domain
    the journal last saw stop (its start was not seen). Otherwise a
    FAILING streak whose last verdict is older than ``stale_after``
    seconds (failure threshold x interval + timeout: longer than the
    streak could have taken) is not continued: what the guest did
    meanwhile is unknown, and a 2-of-3 saved before a long outage must
    not report on the first timeout after it. The streak starts again
    from where it began (HEALTHY, or DISCOVERY if never proven healthy).
    An unknown boot is learnt without a restart.
    """
    if rec.boot_id and boot_id and rec.boot_id != boot_id:
        return dataclasses.replace(_to_discovery(rec, now), boot_id=boot_id, boots=1)
    if not rec.boot_id and boot_id:
        rec = dataclasses.replace(rec, boot_id=boot_id)
    if rec.state is State.DISCOVERY and rec.boots == 0:
        return dataclasses.replace(_to_discovery(rec, now), boots=1)
    if (rec.state is State.FAILING and stale_after is not None
            and now - rec.updated_at > stale_after):
        state = State.HEALTHY if rec.seen_healthy else State.DISCOVERY
        return dataclasses.replace(rec, state=state, since=now, updated_at=now,
                                   failures=0, successes=0,
                                   first_failure_at=None, held="")
    return rec
