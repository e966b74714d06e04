"""The notifier driver interface and the notification it delivers.

Drivers are stevedore plugins in ``masakarimonitors_iim.notifiers``.
Only the ``masakari`` driver talks to Masakari.
"""
from __future__ import annotations

import abc
import dataclasses
import datetime
import enum

from oslo_config import cfg

NAMESPACE = "masakarimonitors_iim.notifiers"


@dataclasses.dataclass(frozen=True)
class Notification:
    """One failure episode of one instance, as stored in the outbox.

    ``generated_time`` is when the monitor detected the failure (an
    ISO-8601 UTC string), not when delivery finally succeeded: Masakari
    uses it to order events, and its duplicate check relies on it staying
    the same across retries. The one exception: when Masakari's duplicate
    window rejected it because of a different, earlier notification, the
    sender re-stamps it before sending it again (see
    :mod:`masakarimonitors_iim.outbox.sender`).
    """

    instance_uuid: str
    hostname: str
    generated_time: str
    event: str = "LIFECYCLE"
    vir_domain_event: str = "STOPPED_FAILED"
    type: str = "VM"

    def payload(self) -> dict[str, str]:
        """Exactly the three keys Masakari's VM schema accepts."""
        return {"event": self.event,
                "instance_uuid": self.instance_uuid,
                "vir_domain_event": self.vir_domain_event}


#: What masakari-api accepts for ``generated_time`` (verified against a real
#: noauth2 masakari-api in the testbed); naive, always UTC, always with
#: microseconds so two episodes a moment apart never look identical.
GENERATED_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def format_generated_time(timestamp: float) -> str:
    """Render an epoch timestamp the way Masakari expects ``generated_time``."""
    return datetime.datetime.fromtimestamp(
        timestamp, datetime.timezone.utc).strftime(GENERATED_TIME_FORMAT)


def parse_generated_time(text: str) -> float | None:
    """The epoch of a ``generated_time`` as Masakari renders it, or None.

    Masakari may drop zero microseconds or add an offset; a naive time is
    UTC, as it is everywhere in Masakari.
    """
    try:
        when = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def make_notification(instance_uuid: str, hostname: str,
                      detected_at: float, event: str = "LIFECYCLE") -> Notification:
    """The VM notification for a failure episode detected at ``detected_at``.

    Built once, when the episode is reported, and stored as is: retries
    must resend the very same ``generated_time``.
    """
    return Notification(instance_uuid=instance_uuid, hostname=hostname,
                        generated_time=format_generated_time(detected_at),
                        event=event)


class DeliveryStatus(str, enum.Enum):
    #: 2xx with a notification in the body: Masakari has it (uuid kept).
    DELIVERED = "delivered"
    #: 409 duplicate: Masakari holds a notification with the same payload
    #: from this host generated within its duplicate window. Either an
    #: earlier attempt of this one landed, or a different, earlier
    #: notification did; the sender asks Masakari which.
    DUPLICATE = "duplicate"
    #: Masakari (or whatever answered) failed in a way that may pass: a
    #: 500, throttling, no complete answer in time after the request was
    #: sent. Retried with back-off.
    RETRY = "retry"
    #: Nothing reached Masakari: connection refused, no route, a gateway's
    #: 502/503/504, Keystone unreachable. Retried as soon as a cheap probe
    #: says the API is back.
    UNREACHABLE = "unreachable"
    #: Refused for a reason a configuration fix cures: this host is not in
    #: a failover segment (or named differently), credentials, policy, a
    #: wrong endpoint. Retried, and said loudly; never a dead letter.
    MISCONFIGURED = "misconfigured"
    #: Masakari refused this notification itself; retrying cannot help.
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True)
class DeliveryOutcome:
    status: DeliveryStatus
    detail: str = ""
    #: the uuid Masakari gave the notification (DELIVERED only)
    masakari_uuid: str = ""
    #: its status in Masakari's answer (new, running, ...), "" if unknown
    engine_status: str = ""


@dataclasses.dataclass(frozen=True)
class HeldNotification:
    """A notification Masakari holds, as its list and show calls describe it."""

    uuid: str
    type: str
    generated_time: str
    payload: dict[str, object]
    status: str


class NotifierError(Exception):
    """A question to the notifier's backend got no usable answer (one line)."""


#: What :meth:`Notifier.attempt_timeout` says for drivers that do not know.
DEFAULT_ATTEMPT_TIMEOUT = 30.0


class Notifier(abc.ABC):
    """Delivers one notification; never raises, never blocks unbounded.

    Besides ``send``, a driver may answer questions about what its backend
    holds. The defaults say "cannot tell", which keeps a notification
    pending rather than guessing.
    """

    name: str = ""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @abc.abstractmethod
    def send(self, notification: Notification) -> DeliveryOutcome:
        """Try once; the sender decides about retries."""

    def held_since(self, since: str, kind: str = "VM") -> list[HeldNotification]:
        """Notifications of type ``kind`` generated at or after ``since``.

        Raises :class:`NotifierError` when the backend cannot be asked.
        """
        raise NotifierError("the %s notifier cannot list notifications"
                            % (self.name or type(self).__name__))

    def show(self, uuid: str) -> HeldNotification:
        """One notification by its uuid; raises :class:`NotifierError`."""
        raise NotifierError("the %s notifier cannot look notifications up"
                            % (self.name or type(self).__name__))

    def reachable(self) -> bool | None:
        """Whether the backend answers at all, asked cheaply (no
        notification sent); None when the driver cannot tell."""
        return None

    def attempt_timeout(self) -> float:
        """The longest one :meth:`send` can take. The sender leases a row
        for that long before sending, so a restarted monitor in the same
        process (masakari-monitors restarts its manager on SIGHUP) never
        sends it again while the first attempt may still be in flight."""
        return DEFAULT_ATTEMPT_TIMEOUT
