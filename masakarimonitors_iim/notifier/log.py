"""A notifier that only logs: for dry runs and for trying policies safely."""
from __future__ import annotations

from oslo_log import log as logging

from masakarimonitors_iim.notifier.base import DeliveryOutcome
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import Notification
from masakarimonitors_iim.notifier.base import Notifier

LOG = logging.getLogger(__name__)


class LogNotifier(Notifier):
    """Logs what would be sent and reports it delivered.

    Delivered, not pending: a dry run must exercise the whole episode
    bookkeeping (one line per episode) without piling up an outbox that a
    later switch to the ``masakari`` driver would suddenly flush.
    """

    name = "log"

    def send(self, notification: Notification) -> DeliveryOutcome:
        n = notification
        LOG.warning("would notify Masakari: type=%s hostname=%s "
                    "generated_time=%s payload=%s", n.type, n.hostname,
                    n.generated_time, n.payload())
        return DeliveryOutcome(DeliveryStatus.DELIVERED,
                               "logged only (log notifier, dry run)")
