"""What a 409 duplicate means for the notification at hand: ask Masakari.

Masakari (``_is_duplicate_notification``) answers 409 to a notification
when it holds one of the same type and payload, from the same host,
generated at or after ``generated_time -
duplicate_notification_detection_interval`` (180 s by default), whatever
that one's status. So a 409 says "something like it is there", not "this
one landed": it may be an earlier attempt of this notification whose
answer was lost, or a different, earlier one (a new failure episode of
the same instance within the window), which Masakari will not act on.

Counting attempts cannot tell the two apart (an attempt that hit a
refused connection, a 401 or a gateway's 503 never reached Masakari), so
the sender lists what Masakari holds around the notification's
``generated_time`` and decides from that (:func:`rules.judge_duplicate`):

* ours is there: delivered, under the uuid Masakari gave it;
* it is not: a collision. The row stays pending (``maybe_landed`` drops
  to 0, so the next attempt re-stamps ``generated_time``), one warning is
  logged, and it is re-sent once the latest notification with its
  payload is out of the window;
* Masakari cannot be asked: the attempt counts as failed and is retried;
  nothing is settled on a guess.
"""
from __future__ import annotations

from oslo_log import log as logging

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.notifier.base import DeliveryOutcome
from masakarimonitors_iim.notifier.base import DeliveryStatus as S
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.notifier.base import NotifierError
from masakarimonitors_iim.outbox import rules
from masakarimonitors_iim.outbox.store import OutboxEntry
from masakarimonitors_iim.outbox.store import OutboxStore

LOG = logging.getLogger(__name__)

MAX_DETAIL = 1000


def resolve(outbox: OutboxStore, notifier: Notifier, entry: OutboxEntry,
            outcome: DeliveryOutcome, now: float, *, window: float,
            min_wait: float) -> DeliveryOutcome | None:
    """The outcome to settle the attempt with, or None when it collided
    (the row is then already marked for its re-send)."""
    n = entry.notification
    try:
        held = notifier.held_since(rules.lookup_since(n, window, now), n.type)
    except NotifierError as e:
        return DeliveryOutcome(S.RETRY, "409 duplicate, and Masakari could "
                               "not be asked whether it holds this one "
                               "(retrying): %s; %s" % (e, outcome.detail))
    judged = rules.judge_duplicate(n, held, now=now, window=window,
                                   min_wait=min_wait)
    if judged.landed is not None:
        found = judged.landed
        return DeliveryOutcome(
            S.DELIVERED, "Masakari already had it (409 duplicate; it holds it "
            "as notification %s, status %s)" % (found.uuid, found.status),
            masakari_uuid=found.uuid, engine_status=found.status)
    _collided(outbox, entry, now, outcome.detail, judged, window)
    return None


def _collided(outbox: OutboxStore, entry: OutboxEntry, now: float,
              detail: str, judged: rules.Duplicate, window: float) -> None:
    n = entry.notification
    b = judged.blocker
    blocker = ("notification %s generated %s (%s)" % (b.uuid, b.generated_time,
                                                     b.status)
               if b is not None else "an earlier notification for this instance")
    when = format_generated_time(judged.resend_at)[:19]
    outbox.mark_collision(entry.id, judged.resend_at, one_line(
        "collided with %s in Masakari's duplicate window, and Masakari does "
        "not hold this one: re-sent with a new generated_time at %s UTC (%s)"
        % (blocker, when, detail), MAX_DETAIL))
    again, hint = "", ""
    if entry.restamp_due:       # this attempt was a re-send after a collision
        again = " again"
        hint = ("; Masakari's window may be longer than the %gs assumed here "
                "([callback] duplicate_window)" % window)
    LOG.warning("notification for %s (episode %d) collided%s with %s: "
                "Masakari's duplicate window (duplicate_notification_"
                "detection_interval, 180 s by default) rejected it and will "
                "not act on it; it will be re-sent with a new generated_time "
                "at %s UTC, in %.0fs%s: %s", n.instance_uuid, entry.episode,
                again, blocker, when, judged.resend_at - now, hint,
                one_line(detail, MAX_DETAIL))
