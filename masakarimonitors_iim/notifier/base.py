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
    window rejected the very first attempt because of a different, earlier
    notification, the sender re-stamps it before sending it again (see
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
    DELIVERED = "delivered"   # 2xx: Masakari has it
    # 409 duplicate: Masakari holds a notification with the same payload
    # from this host generated within its duplicate window. Either an
    # earlier attempt of this one landed, or a different, earlier
    # notification did; only the sender knows which.
    DUPLICATE = "duplicate"
    RETRY = "retry"           # 5xx, timeouts, connection errors
    REJECTED = "rejected"     # other 4xx: retrying cannot help


@dataclasses.dataclass(frozen=True)
class DeliveryOutcome:
    status: DeliveryStatus
    detail: str = ""


class Notifier(abc.ABC):
    """Delivers one notification; never raises, never blocks unbounded."""

    name: str = ""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @abc.abstractmethod
    def send(self, notification: Notification) -> DeliveryOutcome:
        """Try once; the sender decides about retries."""
