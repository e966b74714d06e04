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
boot (a reboot loop keeps its first boot's deadline; see
:func:`.boot.on_restarted`).

A due report may be *held* by a guard (:mod:`masakarimonitors_iim.guards`):
:func:`on_held` then keeps the domain FAILING with its streak (a boot past
its deadline stays DISCOVERY, so it keeps its boot's reason) and the
reason in ``Record.held``, and the next FAILED round is due again.

What a boot means for a record (restart, stop, watched again, the boot
deadline) is :mod:`.boot`'s; the record and its words are
:mod:`.record`'s. Both are re-exported here, so a caller speaks to the
journal through this one module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from masakarimonitors_iim.journal import boot
from masakarimonitors_iim.journal.boot import on_restarted
from masakarimonitors_iim.journal.boot import on_stopped
from masakarimonitors_iim.journal.boot import on_watched_again
from masakarimonitors_iim.journal.record import new_record
from masakarimonitors_iim.journal.record import Record
from masakarimonitors_iim.journal.record import Report
from masakarimonitors_iim.journal.record import State
from masakarimonitors_iim.journal.record import Thresholds
from masakarimonitors_iim.verdict import ProbeResult
from masakarimonitors_iim.verdict import Verdict

__all__ = ["can_report", "new_record", "on_held", "on_restarted", "on_result", "on_stopped",
           "on_watched_again", "Record", "Report", "State", "Thresholds"]


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


def can_report(rec: Record | None) -> bool:
    """Whether FAILED rounds from here could still lead to a report: not
    once one went out (REPORTED counts, never reports, whatever the
    policy). Only then is corroborating a failure worth a libvirt call.

    A boot never seen healthy is not exempt although its default policy
    never reports it: a reload may set ``boot_report: always``, and its
    report must then find the I/O history the activity guard judges on.
    """
    return rec is None or rec.state is not State.REPORTED


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
            and boot.overdue(rec, thresholds, now)):
        rec = dataclasses.replace(rec, failures=failures, successes=0,
                                  first_failure_at=first)
        return _report(rec, now, boot.reason(rec, result, thresholds))
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
