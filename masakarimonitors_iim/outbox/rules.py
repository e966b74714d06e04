"""The sender's decisions, as pure functions (table-tested).

* what a 409 duplicate means, from what Masakari says it holds;
* when to look again at where Masakari's engine took a notification;
* what an engine's end means for a guest the journal still sees failing.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from masakarimonitors_iim.journal.machine import Record
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.notifier.base import HeldNotification
from masakarimonitors_iim.notifier.base import Notification
from masakarimonitors_iim.notifier.base import parse_generated_time
from masakarimonitors_iim.outbox.entry import ENGINE_FINAL

#: Seconds added past the end of Masakari's duplicate window before a
#: collided notification is re-sent, and to the range asked about.
WINDOW_MARGIN = 1.0
LOOKUP_MARGIN = 60.0

#: Engine ends that leave the instance unrecovered.
NOT_RECOVERED = ("failed", "ignored", "error")


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """What a 409 meant: ``landed`` is ours as Masakari holds it; else
    ``blocker`` (the latest notification with our payload, if seen) kept
    ours out, and it may be re-sent, re-stamped, at ``resend_at``."""

    landed: HeldNotification | None
    blocker: HeldNotification | None = None
    resend_at: float = 0.0


def lookup_since(notification: Notification, window: float, now: float) -> str:
    """``generated-since`` for the question: the start of Masakari's window
    before this notification's time, with a margin."""
    ours = parse_generated_time(notification.generated_time)
    return format_generated_time((now if ours is None else ours)
                                 - window - LOOKUP_MARGIN)


#: How far Masakari's copy of ``generated_time`` may be from ours and
#: still be ours: Masakari keeps it in a DateTime column, which MySQL and
#: MariaDB (the usual production databases) store to the second. Two
#: episodes of one instance are never this close: a new episode needs a
#: healthy round after the last report.
SAME_TIME_TOLERANCE = 1.0


def _same_time(a: str, b: str) -> bool:
    ta, tb = parse_generated_time(a), parse_generated_time(b)
    return ta is not None and tb is not None and abs(ta - tb) < SAME_TIME_TOLERANCE


def judge_duplicate(ours: Notification, held: Sequence[HeldNotification], *,
                    now: float, window: float, min_wait: float) -> Duplicate:
    """Masakari answered 409 to ``ours``; ``held`` is what it holds since
    :func:`lookup_since`. Masakari calls a notification a duplicate when it
    holds one of the same type and payload generated at or after
    ``generated_time - window``, whatever its status."""
    same = [h for h in held
            if h.type == ours.type and h.payload == ours.payload()]
    mine = [h for h in same if _same_time(h.generated_time, ours.generated_time)]
    if mine:
        at = parse_generated_time(ours.generated_time) or 0.0
        return Duplicate(landed=min(
            mine, key=lambda h: abs((parse_generated_time(h.generated_time) or 0.0) - at)))
    dated = [(t, h) for h in same
             if (t := parse_generated_time(h.generated_time)) is not None]
    if not dated:
        # Masakari's window reaches further back than the question did.
        return Duplicate(None, None, now + max(window, min_wait))
    latest, blocker = max(dated, key=lambda pair: pair[0])
    return Duplicate(None, blocker,
                     max(now + min_wait, latest + window + WINDOW_MARGIN))


def follow_delay(age: float, base: float, cap: float) -> float:
    """Seconds between two looks at a notification ``age`` seconds after it
    was delivered: every ``base`` while a recovery normally runs, slower
    as it drags on, at most ``cap``."""
    return min(cap, max(base, age / 10.0))


def follow_due(delivered_at: float | None, checked_at: float | None,
               now: float, base: float, cap: float) -> bool:
    start = delivered_at if delivered_at is not None else now
    last = checked_at if checked_at is not None else start
    return now >= last + follow_delay(now - start, base, cap)


def recovery_note(engine_status: str, uuid: str, record: Record | None,
                  episode: int) -> tuple[int, str] | None:
    """How loudly to say where Masakari took notification ``uuid`` of
    ``episode``, given the domain's journal record now; None while the
    engine is not done."""
    if engine_status not in ENGINE_FINAL:
        return None
    ended = "Masakari's engine ended notification %s %r" % (uuid, engine_status)
    if engine_status not in NOT_RECOVERED:
        return logging.INFO, "recovered: %s" % ended
    if record is None:
        return logging.WARNING, ("%s; the domain is no longer on this host"
                                 % ended)
    if record.state is State.HEALTHY:
        return logging.WARNING, ("%s, but the guest is healthy again" % ended)
    if record.episode > episode:
        return logging.WARNING, ("%s; a later failure (episode %d) has been "
                                 "reported since" % (ended, record.episode))
    # "NOT recovered" first: status shows the start of this text.
    return logging.ERROR, (
        "NOT recovered: %s and the guest is still failing (journal %s, last: "
        "%s); see masakari-engine's log for this notification and recover "
        "the instance by hand" % (ended, record.state.value,
                                  record.last_reason or "no reason"))
