"""The driver that posts VM notifications to the Masakari API.

Configuration is the ``[api]`` group masakari-monitors already uses
(keystoneauth1 auth and session options plus ``region`` and
``api_interface``), so an existing masakarimonitors.conf works unchanged:
password auth against a real cloud, or ``auth_type = none`` with
``endpoint = http://.../v1`` against a noauth masakari-api.

``send`` classifies every answer into DELIVERED / DUPLICATE / RETRY /
REJECTED and never raises; the outbox sender owns the retry policy and
decides what a 409 duplicate means for the notification at hand.
"""
from __future__ import annotations

import threading
from typing import Any

from keystoneauth1 import loading as ks_loading
from openstack import connection
from openstack import exceptions as sdk_exc
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import strutils

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.notifier.base import DeliveryOutcome
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import Notification
from masakarimonitors_iim.notifier.base import Notifier

LOG = logging.getLogger(__name__)

GROUP = "api"

#: Request timeout (seconds) when ``[api] timeout`` is unset: keystoneauth's
#: own default is to wait forever, which would wedge the sender thread.
DEFAULT_TIMEOUT = 30

#: 4xx answers that say nothing about the notification itself: bad or
#: expired credentials, a policy or endpoint misconfiguration, throttling.
#: Retrying after the operator fixes the cause delivers the notification,
#: so these must not turn it into a dead letter.
RETRYABLE_4XX = frozenset({401, 403, 404, 407, 408, 429})

_MAX_DETAIL = 500


class MasakariNotifier(Notifier):
    """Posts one notification per call through openstacksdk's instance_ha proxy."""

    name = "masakari"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._conn: connection.Connection | None = None
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------

    def _auth_group(self) -> str:
        return self.conf[GROUP].auth_section or GROUP

    def _connection(self) -> connection.Connection:
        """Build the openstacksdk Connection once, on first use.

        Lazily, so a monitor with a broken ``[api]`` section still starts
        and probes (notifications queue up in the outbox until the config
        is fixed); once, so a keystone token is reused across notifications.
        Building it does no network I/O.
        """
        with self._lock:
            if self._conn is None:
                self._conn = self._build_connection()
            return self._conn

    def _build_connection(self) -> connection.Connection:
        api = self.conf[GROUP]
        auth = ks_loading.load_auth_from_conf_options(self.conf, GROUP)
        if auth is None:
            raise ValueError("[%s] auth_type is not set" % GROUP)
        sess = ks_loading.load_session_from_conf_options(
            self.conf, GROUP, auth=auth,
            timeout=api.timeout or DEFAULT_TIMEOUT)
        kwargs: dict[str, Any] = {
            "session": sess,
            "region_name": api.region,
            "instance_ha_interface": api.api_interface,
        }
        auth_group = self._auth_group()
        if self.conf[auth_group].auth_type == "none":
            endpoint = self.conf[auth_group].endpoint
            if not endpoint:
                raise ValueError("[%s] auth_type = none needs endpoint = "
                                 "http://<masakari-api>/v1" % auth_group)
            kwargs["instance_ha_endpoint_override"] = endpoint
        LOG.debug("Masakari client: auth_type=%s region=%s interface=%s "
                  "endpoint=%s timeout=%ss", self.conf[auth_group].auth_type,
                  api.region, api.api_interface,
                  kwargs.get("instance_ha_endpoint_override", "(catalog)"),
                  sess.timeout)
        return connection.Connection(**kwargs)

    # -- sending -------------------------------------------------------------

    def send(self, notification: Notification) -> DeliveryOutcome:
        n = notification
        try:
            conn = self._connection()
        except Exception as e:
            return self._outcome(DeliveryStatus.RETRY,
                                 "cannot set up the Masakari client: %s"
                                 % _describe(e))
        try:
            created = conn.instance_ha.create_notification(
                type=n.type, hostname=n.hostname,
                generated_time=n.generated_time, payload=n.payload())
        except sdk_exc.ConflictException as e:
            message = _server_message(e)
            if "maintenance" in message.lower():
                # Also a 409: Masakari deliberately ignores notifications
                # from a host under maintenance. Retrying cannot help, and a
                # late success would recover a VM hours after the fact.
                return self._outcome(DeliveryStatus.REJECTED,
                                     "HTTP 409: %s" % message)
            # Masakari holds a notification with the same payload from this
            # host generated within its duplicate window (180 s by default),
            # whatever its status: an earlier attempt of this one whose
            # answer was lost, or a different, earlier episode.
            return self._outcome(DeliveryStatus.DUPLICATE,
                                 "HTTP 409: %s" % message)
        except sdk_exc.HttpException as e:
            code = e.status_code or 0
            if 400 <= code < 500 and code not in RETRYABLE_4XX:
                return self._outcome(DeliveryStatus.REJECTED,
                                     "HTTP %d: %s" % (code, _server_message(e)))
            return self._outcome(DeliveryStatus.RETRY,
                                 "HTTP %s: %s" % (code or "error",
                                                  _server_message(e)))
        except Exception as e:
            # Connection refused, timeouts, keystone trouble, sdk bugs:
            # nothing here says Masakari refused the notification.
            return self._outcome(DeliveryStatus.RETRY, _describe(e))
        return self._outcome(
            DeliveryStatus.DELIVERED,
            "accepted as notification %s (status %s)"
            % (getattr(created, "notification_uuid", None) or "?",
               getattr(created, "status", None) or "?"))

    def _outcome(self, status: DeliveryStatus, detail: str) -> DeliveryOutcome:
        return DeliveryOutcome(status, self._scrub(detail))

    def _secrets(self) -> list[str]:
        """Values of every secret option of the auth plugin in use."""
        values: list[str] = []
        try:
            group = self._auth_group()
            auth_type = self.conf[group].auth_type
            if auth_type:
                # keystoneauth1's own hints leave the loader's type open.
                loader: Any = ks_loading.get_plugin_loader(auth_type)
                for opt in loader.get_options():
                    if opt.secret:
                        value = getattr(self.conf[group], opt.dest, None)
                        if isinstance(value, str) and value:
                            values.append(value)
        except Exception:  # noqa: S110 - best effort, mask_password still runs
            pass
        return values

    def _scrub(self, detail: str) -> str:
        """One line, bounded, with no credential in it, whatever the server echoed.

        Masked before it is cut, so a secret straddling the cap cannot
        leave its first half behind.
        """
        text = str(detail)
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return one_line(strutils.mask_password(text), _MAX_DETAIL)


def _server_message(e: sdk_exc.HttpException) -> str:
    """The server's own words (e.g. "Host with name x could not be found.")."""
    details = getattr(e, "details", None)
    if details:
        return str(details)
    return str(e)


def _describe(e: BaseException) -> str:
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__
