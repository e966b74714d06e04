"""The driver that talks to the Masakari API: posts VM notifications, and
answers the sender's questions about what Masakari holds.

Configuration is the ``[api]`` group masakari-monitors already uses
(keystoneauth1 auth and session options plus ``region`` and
``api_interface``), so an existing masakarimonitors.conf works unchanged:
password auth against a real cloud, or ``auth_type = none`` with
``endpoint = http://.../v1`` against a noauth masakari-api.

Requests go through the keystoneauth session directly (not openstacksdk),
because every one of them must end within a total deadline (``[api]
timeout``, :data:`DEFAULT_TIMEOUT` when unset) and read a bounded body
(:mod:`masakarimonitors_iim.notifier.bounded`). ``send`` classifies every
answer (:mod:`masakarimonitors_iim.notifier.answers`) and never raises; the
outbox sender owns the retry policy and what a 409 means.
"""
from __future__ import annotations

import threading
from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_utils import strutils

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.notifier import answers
from masakarimonitors_iim.notifier import bounded
from masakarimonitors_iim.notifier.base import DeliveryOutcome
from masakarimonitors_iim.notifier.base import DeliveryStatus as S
from masakarimonitors_iim.notifier.base import HeldNotification
from masakarimonitors_iim.notifier.base import Notification
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.notifier.base import NotifierError

GROUP = "api"
SERVICE_TYPE = "instance-ha"

#: Total seconds one request may take when ``[api] timeout`` is unset
#: (keystoneauth's own default is to wait forever).
DEFAULT_TIMEOUT = 30
#: The cheap "is the API back?" probe never takes longer than this.
PROBE_TIMEOUT = 5.0
#: Bytes read of an answer: Masakari's are well under 2 KiB; a list page
#: of LIST_LIMIT notifications is about 0.7 MB.
MAX_BODY = 64 * 1024
MAX_LIST_BODY = 2 * 1024 * 1024
LIST_LIMIT = 1000
#: Pages of a notification list read before giving up on an answer.
MAX_PAGES = 5

_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}
_MAX_DETAIL = 500


class MasakariNotifier(Notifier):
    name = "masakari"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._session: ks_session.Session | None = None
        self._lock = threading.Lock()

    # -- the session ---------------------------------------------------------

    def _auth_group(self) -> str:
        return self.conf[GROUP].auth_section or GROUP

    def _get_session(self) -> ks_session.Session:
        """Built once, on first use: lazily, so a monitor with a broken
        ``[api]`` section still starts and probes (notifications wait in
        the outbox); once, so a Keystone token is reused."""
        with self._lock:
            if self._session is None:
                auth = ks_loading.load_auth_from_conf_options(self.conf, GROUP)
                if auth is None:
                    raise ValueError("[%s] auth_type is not set" % GROUP)
                sess = ks_loading.load_session_from_conf_options(
                    self.conf, GROUP, auth=auth, timeout=self.total_timeout())
                bounded.install(sess)
                self._session = sess
            return self._session

    def total_timeout(self) -> float:
        return float(self.conf[GROUP].timeout or DEFAULT_TIMEOUT)

    def attempt_timeout(self) -> float:
        return self.total_timeout()

    def _base_url(self, sess: ks_session.Session) -> str:
        group = self._auth_group()
        if self.conf[group].auth_type == "none":
            endpoint = self.conf[group].endpoint
            if not endpoint:
                raise ValueError("[%s] auth_type = none needs endpoint = "
                                 "http://<masakari-api>/v1" % group)
            return str(endpoint).rstrip("/")
        api = self.conf[GROUP]
        url = sess.get_endpoint(service_type=SERVICE_TYPE,
                                interface=api.api_interface,
                                region_name=api.region)
        if not url:
            raise ks_exc.EndpointNotFound(
                "no %s endpoint (interface %s, region %s) in the catalog"
                % (SERVICE_TYPE, api.api_interface, api.region))
        return str(url).rstrip("/")

    # -- one bounded request ---------------------------------------------------

    def _call(self, method: str, path: str, *, cap: int = MAX_BODY,
              body: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None,
              authenticated: bool = True,
              seconds: float | None = None) -> answers.Answer | DeliveryOutcome:
        """The answer, or why there is none (as an outcome of the attempt)."""
        with bounded.deadline(seconds or self.total_timeout()) as watch:
            try:
                sess = self._get_session()
                resp = sess.request(
                    self._base_url(sess) + path, method, json=body,
                    params=params, headers=dict(_HEADERS), raise_exc=False,
                    log=False, stream=True, redirect=False, connect_retries=0,
                    authenticated=authenticated,
                    timeout=max(0.1, watch.remaining()))
                data, truncated = bounded.read_capped(resp, cap)
                if watch.expired:
                    # Cut short: what was parsed (a status line, half the
                    # headers) is no answer.
                    raise TimeoutError("answer cut at the deadline")
            except Exception as e:
                return self._failure(e, watch)
        return answers.Answer(resp.status_code, resp.headers.get("Content-Type", ""),
                              data, truncated, resp.headers.get("Location", ""))

    def _failure(self, e: Exception, watch: bounded.Watch) -> DeliveryOutcome:
        if watch.expired:
            if watch.sent:
                return self._outcome(S.RETRY, "no complete answer within %gs "
                                     "([api] timeout); it may have reached "
                                     "Masakari" % watch.seconds)
            return self._outcome(S.UNREACHABLE, "no answer within %gs ([api] "
                                 "timeout): %s" % (watch.seconds, _describe(e)))
        if isinstance(e, ks_exc.HttpError):
            # Ours are made with raise_exc=False: this is Keystone answering.
            code = e.http_status or 0
            if code in (401, 403):
                return self._outcome(S.MISCONFIGURED, "Keystone refused the "
                                     "[api] credentials: %s" % _describe(e))
            return self._outcome(S.UNREACHABLE, "Keystone: %s" % _describe(e))
        if isinstance(e, ks_exc.SSLError):
            return self._outcome(S.MISCONFIGURED, "%s; check [api] cafile, "
                                 "certfile, keyfile or insecure" % _describe(e))
        if isinstance(e, ks_exc.DiscoveryFailure):
            return self._outcome(S.UNREACHABLE, _describe(e))
        if isinstance(e, (ks_exc.ClientException, cfg.Error, ValueError,
                          TypeError)) and not isinstance(e, ks_exc.ConnectionError):
            return self._outcome(S.MISCONFIGURED, "cannot set up the Masakari "
                                 "client: %s" % _describe(e))
        if watch.sent:
            return self._outcome(S.RETRY, "%s; it may have reached Masakari"
                                 % _describe(e))
        return self._outcome(S.UNREACHABLE, _describe(e))

    # -- the driver ----------------------------------------------------------------

    def send(self, notification: Notification) -> DeliveryOutcome:
        n = notification
        result = self._call("POST", "/notifications", body={"notification": {
            "type": n.type, "hostname": n.hostname,
            "generated_time": n.generated_time, "payload": n.payload()}})
        if isinstance(result, DeliveryOutcome):
            return result
        outcome = answers.classify_post(result, n.hostname)
        return self._outcome(outcome.status, outcome.detail,
                             outcome.masakari_uuid, outcome.engine_status)

    def held_since(self, since: str, kind: str = "VM") -> list[HeldNotification]:
        """Every page of ``GET /notifications?generated-since=...&type=...``.

        Masakari caps a page at its ``osapi_max_limit`` without saying so,
        so pages are read until one comes back empty.
        """
        found: list[HeldNotification] = []
        params: dict[str, Any] = {"type": kind, "generated-since": since,
                                  "limit": LIST_LIMIT, "sort_key": "generated_time",
                                  "sort_dir": "desc"}
        for _ in range(MAX_PAGES):
            result = self._call("GET", "/notifications", params=params,
                                cap=MAX_LIST_BODY)
            if isinstance(result, DeliveryOutcome):
                raise NotifierError(result.detail)
            try:
                page, ids = answers.parse_list(result)
            except ValueError as e:
                raise NotifierError(self._scrub("listing notifications: %s" % e)) from None
            found += page
            if not page:
                return found
            if len(ids) != len(page):
                raise NotifierError("listed notifications carry no id to ask "
                                    "for the next page with")
            params["marker"] = ids[-1]
        raise NotifierError("more than %d pages of VM notifications since %s: "
                            "cannot tell which Masakari holds"
                            % (MAX_PAGES, one_line(since, 40)))

    def show(self, uuid: str) -> HeldNotification:
        if not answers.is_uuid(uuid):
            raise NotifierError("not a notification uuid: %s" % one_line(uuid, 60))
        result = self._call("GET", "/notifications/%s" % uuid)
        if isinstance(result, DeliveryOutcome):
            raise NotifierError(result.detail)
        try:
            return answers.parse_show(result)
        except ValueError as e:
            raise NotifierError(self._scrub("notification %s: %s" % (uuid, e))) from None

    def reachable(self) -> bool | None:
        """An unauthenticated GET of the endpoint: any answer but a
        gateway's 502/503/504 means the API is there (a 401 included);
        it creates nothing and costs Masakari no database query."""
        result = self._call("GET", "", authenticated=False, cap=4096,
                            seconds=min(self.total_timeout(), PROBE_TIMEOUT))
        if isinstance(result, DeliveryOutcome):
            return False
        return result.status not in (502, 503, 504)

    # -- scrubbing -----------------------------------------------------------------

    def _outcome(self, status: S, detail: str, uuid: str = "",
                 engine_status: str = "") -> DeliveryOutcome:
        return DeliveryOutcome(status, self._scrub(detail), uuid, engine_status)

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
        """One line, bounded, with no credential in it, whatever the server
        echoed. Masked before it is cut, so a secret straddling the cap
        cannot leave its first half behind."""
        text = str(detail)
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return one_line(strutils.mask_password(text), _MAX_DETAIL)


def _describe(e: BaseException) -> str:
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__
