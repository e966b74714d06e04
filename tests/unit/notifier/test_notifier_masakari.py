"""The masakari driver against a tiny local stand-in for masakari-api.

The stand-in answers the way masakari-api 22 does (version document,
202 with a notification body, 409/400 fault bodies), so openstacksdk's
real request path, discovery included, is exercised.
"""
from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time

import pytest
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from masakarimonitors_iim.notifier import masakari as masakari_mod
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.notifier.masakari import MasakariNotifier

UUID = "6f1b2d3c-1111-4a5b-9c8d-0123456789ab"
PASSWORD = "s3cr3t-Pa55w0rd-never-log-me"


def fault(kind, code, message):
    return code, {kind: {"code": code, "message": message}}


ANSWERS = {
    "duplicate": fault("conflict", 409, "Notification received from host "
                       "host1 of type VM is duplicate."),
    "maintenance": fault("conflict", 409, "Notification received from host "
                         "host1 of type 'VM' is ignored as the host is "
                         "already under maintenance."),
    "badhost": fault("badRequest", 400,
                     "Host with name host1 could not be found."),
    "error": fault("computeFault", 500, "Unexpected API Error."),
    "unavailable": fault("serviceUnavailable", 503, "try later"),
    "unauthorized": fault("unauthorized", 401, "Authentication required"),
    "forbidden": fault("forbidden", 403, "Policy doesn't allow it"),
    "notfound": fault("itemNotFound", 404, "not here"),
    "throttled": fault("overLimit", 429, "slow down"),
    "unprocessable": fault("badRequest", 422, "nope"),
}


class FakeMasakari:
    """masakari-api's answers, one mode at a time; records every POST body."""

    def __init__(self):
        self.mode = "accept"
        self.posts: list[object] = []
        self.release = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                base = "http://127.0.0.1:%d" % fake.port
                if fake.mode == "down":
                    self.reply(*ANSWERS["unavailable"])
                elif self.path.rstrip("/") == "/v1":
                    self.reply(200, {"version": {
                        "id": "v1.0", "status": "CURRENT", "version": "1.3",
                        "min_version": "1.0", "updated": "2016-07-01T11:33:21Z",
                        "links": [{"rel": "self", "href": base + "/v1/"}],
                        "media-types": [{"base": "application/json", "type":
                                         "application/vnd.openstack.masakari+json;version=1"}]}})
                elif self.path.rstrip("/") == "/identity":
                    self.reply(200, {"versions": {"values": [{
                        "id": "v3.14", "status": "stable",
                        "updated": "2020-04-07T00:00:00Z",
                        "links": [{"rel": "self",
                                   "href": base + "/identity/v3/"}],
                        "media-types": [{"base": "application/json", "type":
                                         "application/vnd.openstack.identity-v3+json"}]}]}})
                else:
                    self.reply(404, {"itemNotFound": {"code": 404,
                                                      "message": "no"}})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.startswith("/identity"):
                    # A hostile keystone that echoes the credentials back.
                    self.reply(401, {"error": {
                        "code": 401, "title": "Unauthorized",
                        "message": "rejected " + body.decode()}})
                    return
                fake.posts.append((self.path, json.loads(body)))
                if fake.mode == "hang":
                    fake.release.wait(10)
                    return
                if fake.mode == "echo":
                    self.reply(400, {"badRequest": {
                        "code": 400, "message": body.decode()}})
                    return
                if fake.mode in ANSWERS:
                    self.reply(*ANSWERS[fake.mode])
                    return
                n = json.loads(body)["notification"]
                self.reply(202, {"notification": {
                    "id": 1, "notification_uuid":
                        "0f7e6c58-0000-4000-8000-000000000001",
                    "generated_time": n["generated_time"],
                    "source_host_uuid": "9e9a1b2c-0000-4000-8000-000000000002",
                    "type": n["type"], "payload": n["payload"],
                    "status": "new", "failover_segment_uuid":
                        "9e9a1b2c-0000-4000-8000-000000000003",
                    "message": None, "recovery_workflow_details": [],
                    "created_at": "2024-01-01T00:00:00.000000",
                    "updated_at": None, "deleted_at": None,
                    "deleted": False}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakeMasakari()
    yield f
    f.close()


def make_conf(tmp_path, text):
    """[api] options as the lead registers them, read from a real file."""
    conf = cfg.ConfigOpts()
    ks_loading.register_session_conf_options(conf, "api")
    ks_loading.register_auth_conf_options(conf, "api")
    conf.register_opts([cfg.StrOpt("region", default="RegionOne"),
                        cfg.StrOpt("api_version", default="v1"),
                        cfg.StrOpt("api_interface", default="public")],
                       group="api")
    path = tmp_path / "masakarimonitors.conf"
    path.write_text(text)
    conf(args=["--config-file", str(path)], project="masakarimonitors",
         default_config_files=[])
    return conf


def noauth(tmp_path, port, extra=""):
    return make_conf(tmp_path, "[api]\nauth_type = none\n"
                     "endpoint = http://127.0.0.1:%d/v1\ntimeout = 2\n%s"
                     % (port, extra))


def notification():
    return make_notification(UUID, "host1", 1700000000.25)


def test_accepted_posts_exactly_what_masakari_expects(fake, tmp_path):
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    outcome = n.send(notification())
    assert outcome.status is DeliveryStatus.DELIVERED
    assert "0f7e6c58-0000-4000-8000-000000000001" in outcome.detail
    [(path, body)] = fake.posts
    assert path == "/v1/notifications"
    assert body == {"notification": {
        "type": "VM", "hostname": "host1",
        "generated_time": "2023-11-14T22:13:20.250000",
        "payload": {"event": "LIFECYCLE", "instance_uuid": UUID,
                    "vir_domain_event": "STOPPED_FAILED"}}}


@pytest.mark.parametrize("mode,status,words", [
    # Not DELIVERED: only the sender knows whether the 409 is about an
    # earlier attempt of this notification or a different one.
    ("duplicate", DeliveryStatus.DUPLICATE, "is duplicate"),
    ("maintenance", DeliveryStatus.REJECTED, "under maintenance"),
    ("badhost", DeliveryStatus.REJECTED, "Host with name host1 could not"),
    ("unprocessable", DeliveryStatus.REJECTED, "HTTP 422"),
    ("error", DeliveryStatus.RETRY, "HTTP 500"),
    ("unavailable", DeliveryStatus.RETRY, "HTTP 503"),
    ("unauthorized", DeliveryStatus.RETRY, "HTTP 401"),
    ("forbidden", DeliveryStatus.RETRY, "HTTP 403"),
    ("notfound", DeliveryStatus.RETRY, "HTTP 404"),
    ("throttled", DeliveryStatus.RETRY, "HTTP 429"),
])
def test_answers_are_classified(fake, tmp_path, mode, status, words):
    fake.mode = mode
    outcome = MasakariNotifier(noauth(tmp_path, fake.port)).send(notification())
    assert outcome.status is status
    assert words in outcome.detail
    assert "\n" not in outcome.detail


def test_a_server_that_never_answers_times_out(fake, tmp_path):
    fake.mode = "hang"
    n = MasakariNotifier(noauth(tmp_path, fake.port, "timeout = 1\n"))
    # Discovery (GET) answers; the POST hangs.
    start = time.monotonic()
    outcome = n.send(notification())
    elapsed = time.monotonic() - start
    assert outcome.status is DeliveryStatus.RETRY
    assert elapsed < 8
    assert "timed out" in outcome.detail.lower()


def test_timeout_defaults_when_unset(fake, tmp_path):
    conf = make_conf(tmp_path, "[api]\nauth_type = none\n"
                     "endpoint = http://127.0.0.1:%d/v1\n" % fake.port)
    n = MasakariNotifier(conf)
    assert n.send(notification()).status is DeliveryStatus.DELIVERED
    assert n._conn is not None
    assert n._conn.session.timeout == masakari_mod.DEFAULT_TIMEOUT


def test_recovers_after_masakari_was_down_at_first_use(fake, tmp_path):
    fake.mode = "down"      # even version discovery fails
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    assert n.send(notification()).status is DeliveryStatus.RETRY
    fake.mode = "accept"
    assert n.send(notification()).status is DeliveryStatus.DELIVERED


def test_connection_refused_is_retry(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()    # nothing listens here now
    outcome = MasakariNotifier(noauth(tmp_path, port)).send(notification())
    assert outcome.status is DeliveryStatus.RETRY
    assert outcome.detail


def test_connection_is_built_once(fake, tmp_path, monkeypatch):
    built = []
    real = masakari_mod.connection.Connection

    def counting(**kw):
        built.append(kw)
        return real(**kw)

    monkeypatch.setattr(masakari_mod.connection, "Connection", counting)
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    fake.mode = "error"
    n.send(notification())
    fake.mode = "accept"
    assert n.send(notification()).status is DeliveryStatus.DELIVERED
    assert len(built) == 1
    kw = built[0]
    assert kw["region_name"] == "RegionOne"
    assert kw["instance_ha_interface"] == "public"
    assert kw["instance_ha_endpoint_override"] == \
        "http://127.0.0.1:%d/v1" % fake.port


@pytest.mark.parametrize("text,words", [
    ("[api]\n", "auth_type is not set"),
    ("[api]\nauth_type = none\n", "endpoint"),
    ("[api]\nauth_type = no-such-plugin\n", "no-such-plugin"),
])
def test_bad_config_is_retry_not_a_crash(tmp_path, text, words):
    outcome = MasakariNotifier(make_conf(tmp_path, text)).send(notification())
    assert outcome.status is DeliveryStatus.RETRY
    assert words in outcome.detail


def password_conf(tmp_path, port):
    return make_conf(tmp_path, (
        "[api]\nauth_type = password\n"
        "auth_url = http://127.0.0.1:{port}/identity\n"
        "username = masakari\npassword = {pw}\nproject_name = service\n"
        "user_domain_name = Default\nproject_domain_name = Default\n"
        "timeout = 2\n").format(port=port, pw=PASSWORD))


def test_password_never_reaches_a_detail_or_a_log(fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    n = MasakariNotifier(password_conf(tmp_path, fake.port))
    outcome = n.send(notification())
    assert outcome.status is DeliveryStatus.RETRY   # 401 from keystone
    assert PASSWORD not in outcome.detail
    assert "***" in outcome.detail                  # it was echoed, and masked
    for record in caplog.records:
        assert PASSWORD not in record.getMessage(), record.name


def test_secrets_are_scrubbed_from_server_echoes(fake, tmp_path):
    # A server echoing our request can only leak what we sent; make sure the
    # scrubber would catch a configured secret anywhere in a detail.
    n = MasakariNotifier(password_conf(tmp_path, fake.port))
    n.send(notification())    # loads the plugin options
    assert n._scrub("oops %s here" % PASSWORD) == "oops *** here"
    assert PASSWORD not in n._scrub('{"password": "%s"}' % PASSWORD)


def test_detail_is_bounded(fake, tmp_path):
    fake.mode = "echo"
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    outcome = n.send(make_notification(UUID, "h" * 2000, 1.0))
    assert outcome.status is DeliveryStatus.REJECTED
    assert len(outcome.detail) <= 500


def test_entry_point_paths_stay_importable():
    from masakarimonitors_iim.notifier.log import LogNotifier
    assert MasakariNotifier.name == "masakari"
    assert LogNotifier.name == "log"
