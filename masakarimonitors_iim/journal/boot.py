"""What a new boot means for a domain's record, as pure functions.

A boot (libvirt STARTED/REBOOTED, a new boot id in a listing, or one the
monitor finds when it starts watching again) puts the record back in
DISCOVERY: what the guest did before says nothing about now. The rules
here decide how much of the past a boot keeps, and when a boot that
never came up is overdue:

* a restart of a boot not yet proven healthy continues that boot, so a
  reboot loop keeps its first boot's deadline (``boots`` counts them);
  a clean stop ends any loop (``boots`` 0);
* a boot id different from the journal's is a restart the monitor did
  not see; a FAILING streak older than it could have taken is not
  continued after the monitor was away;
* past ``boot_deadline`` a guest healthy in an earlier boot (or any
  guest, with ``boot_report: always``) that still fails is reported, in
  words that say it was the boot.

No I/O and no clock reads, like :mod:`.machine`, which folds verdicts
and asks :func:`overdue` and :func:`reason` when a FAILED round comes
in DISCOVERY.
"""

from __future__ import annotations

import dataclasses

from masakarimonitors_iim.journal.record import Record
from masakarimonitors_iim.journal.record import State
from masakarimonitors_iim.journal.record import Thresholds
from masakarimonitors_iim.verdict import ProbeResult


def overdue(rec: Record, thresholds: Thresholds, now: float) -> bool:
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


def reason(rec: Record, result: ProbeResult, thresholds: Thresholds) -> str:
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
