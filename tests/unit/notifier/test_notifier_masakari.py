"""The masakari driver against a tiny local stand-in for masakari-api.

The stand-in answers the way masakari-api 22 does (202 with a
notification body, 409/400 fault bodies, the notification list with its
filters and marker, show by uuid), so keystoneauth's real request path is
exercised over a real socket.
"""
from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
import urllib.parse

import pytest
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from masakarimonitors_iim.notifier import masakari as masakari_mod
from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.notifier.base import NotifierError
from masakarimonitors_iim.notifier.masakari import MasakariNotifier

UUID = "6f1b2d3c-1111-4a5b-9c8d-0123456789ab"
PASSWORD = "s3cr3t-Pa55w0rd-never-log-me"
MU = "0f7e6c58-0000-4000-8000-000000000001"


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


def stored(n, uuid=MU, status="new", id=1):
    return {"id": id, "notification_uuid": uuid,
            "generated_time": n["generated_time"],
            "source_host_uuid": "9e9a1b2c-0000-4000-8000-000000000002",
            "type": n["type"], "payload": n["payload"], "status": status,
            "failover_segment_uuid": "9e9a1b2c-0000-4000-8000-000000000003",
            "message": None, "created_at": "2024-01-01T00:00:00.000000",
            "updated_at": None, "deleted_at": None, "deleted": False}


def token(port):
    """A Keystone v3 token whose catalog has Masakari's endpoint."""
    domain = {"id": "default", "name": "Default"}
    return {"token": {
        "methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
        "issued_at": "2024-01-01T00:00:00.000000Z",
        "user": {"id": "u1", "name": "masakari", "domain": domain},
        "project": {"id": "p1", "name": "service", "domain": domain},
        "catalog": [{"type": "instance-ha", "name": "masakari", "id": "s1",
                     "endpoints": [{"id": "e1", "interface": "public",
                                    "region": "RegionOne",
                                    "region_id": "RegionOne",
                                    "url": "http://127.0.0.1:%d/v1" % port}]}]}}


class FakeMasakari:
    """masakari-api's answers, one mode at a time; records every request."""

    def __init__(self):
        self.mode = "accept"
        self.posts: list[object] = []
        self.gets: list[str] = []
        self.held: list[dict] = []      # what GET /notifications lists
        self.keystone_ok = False
        self.tokens: list[str | None] = []
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
                fake.gets.append(self.path)
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if fake.mode in ("down", "unavailable"):
                    self.reply(*ANSWERS["unavailable"])
                elif url.path.rstrip("/") == "/v1":
                    self.reply(200, {"version": {"id": "v1.0"}})
                elif url.path.rstrip("/") == "/identity":
                    base = "http://127.0.0.1:%d" % fake.port
                    self.reply(200, {"versions": {"values": [{
                        "id": "v3.14", "status": "stable",
                        "updated": "2020-04-07T00:00:00Z",
                        "links": [{"rel": "self",
                                   "href": base + "/identity/v3/"}],
                        "media-types": [{"base": "application/json", "type":
                                         "application/vnd.openstack.identity-v3+json"}]}]}})
                elif url.path == "/v1/notifications":
                    items = [h for h in fake.held
                             if h["generated_time"] >= query["generated-since"]
                             and h["type"] == query["type"]]
                    items.sort(key=lambda h: h["id"], reverse=True)
                    if "marker" in query:
                        items = [h for h in items if h["id"] < int(query["marker"])]
                    self.reply(200, {"notifications": items[:int(query["limit"])]})
                elif url.path.startswith("/v1/notifications/"):
                    uuid = url.path.rsplit("/", 1)[1]
                    for h in fake.held:
                        if h["notification_uuid"] == uuid:
                            self.reply(200, {"notification": h})
                            return
                    self.reply(*fault("itemNotFound", 404, "No notification "
                                      "with id %s." % uuid))
                else:
                    self.reply(404, {"itemNotFound": {"code": 404,
                                                      "message": "no"}})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.startswith("/identity") and fake.keystone_ok:
                    self.send_response(201)
                    data = json.dumps(token(fake.port)).encode()
                    self.send_header("X-Subject-Token", "tok-123")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if self.path.startswith("/identity"):
                    # A hostile keystone that echoes the credentials back.
                    self.reply(401, {"error": {
                        "code": 401, "title": "Unauthorized",
                        "message": "rejected " + body.decode()}})
                    return
                fake.posts.append((self.path, json.loads(body)))
                fake.tokens.append(self.headers.get("X-Auth-Token"))
                if fake.mode == "hang":
                    fake.release.wait(10)
                    return
                if fake.mode == "echo":
                    self.reply(400, {"badRequest": {
                        "code": 400, "message": body.decode()}})
                    return
                if fake.mode in ANSWERS or fake.mode == "down":
                    self.reply(*ANSWERS.get(fake.mode, ANSWERS["unavailable"]))
                    return
                self.reply(202, {"notification": stored(
                    json.loads(body)["notification"])})

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
    """[api] options as the monitor registers them, read from a real file."""
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


def notification(t=1700000000.25):
    return make_notification(UUID, "host1", t)


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()    # nothing listens here now
    return port


def test_accepted_posts_exactly_what_masakari_expects(fake, tmp_path):
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    outcome = n.send(notification())
    assert outcome.status is DeliveryStatus.DELIVERED
    assert (outcome.masakari_uuid, outcome.engine_status) == (MU, "new")
    assert MU in outcome.detail
    [(path, body)] = fake.posts
    assert path == "/v1/notifications"
    assert body == {"notification": {
        "type": "VM", "hostname": "host1",
        "generated_time": "2023-11-14T22:13:20.250000",
        "payload": {"event": "LIFECYCLE", "instance_uuid": UUID,
                    "vir_domain_event": "STOPPED_FAILED"}}}


@pytest.mark.parametrize("mode,status,words", [
    # Not DELIVERED: only the sender, asking Masakari, can tell whether the
    # 409 is about an earlier attempt of this notification or another one.
    ("duplicate", DeliveryStatus.DUPLICATE, "is duplicate"),
    ("maintenance", DeliveryStatus.REJECTED, "under maintenance"),
    ("badhost", DeliveryStatus.MISCONFIGURED, "[DEFAULT] hostname"),
    ("unprocessable", DeliveryStatus.REJECTED, "HTTP 422"),
    ("error", DeliveryStatus.RETRY, "HTTP 500"),
    ("unavailable", DeliveryStatus.UNREACHABLE, "HTTP 503"),
    ("unauthorized", DeliveryStatus.MISCONFIGURED, "HTTP 401"),
    ("forbidden", DeliveryStatus.MISCONFIGURED, "HTTP 403"),
    ("notfound", DeliveryStatus.MISCONFIGURED, "HTTP 404"),
    ("throttled", DeliveryStatus.RETRY, "HTTP 429"),
])
def test_answers_are_classified(fake, tmp_path, mode, status, words):
    fake.mode = mode
    outcome = MasakariNotifier(noauth(tmp_path, fake.port)).send(notification())
    assert outcome.status is status
    assert words in outcome.detail
    assert "\n" not in outcome.detail
    assert outcome.masakari_uuid == ""


def test_a_server_that_never_answers_ends_at_the_deadline(fake, tmp_path):
    fake.mode = "hang"
    n = MasakariNotifier(noauth(tmp_path, fake.port, "timeout = 1\n"))
    start = time.monotonic()
    outcome = n.send(notification())
    elapsed = time.monotonic() - start
    assert outcome.status is DeliveryStatus.RETRY
    assert elapsed < 2
    assert "no complete answer within 1s" in outcome.detail
    assert "may have reached Masakari" in outcome.detail


def test_timeout_defaults_when_unset(fake, tmp_path):
    conf = make_conf(tmp_path, "[api]\nauth_type = none\n"
                     "endpoint = http://127.0.0.1:%d/v1\n" % fake.port)
    n = MasakariNotifier(conf)
    assert n.send(notification()).status is DeliveryStatus.DELIVERED
    assert n.total_timeout() == masakari_mod.DEFAULT_TIMEOUT


def test_recovers_after_masakari_was_down_at_first_use(fake, tmp_path):
    fake.mode = "down"
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    assert n.send(notification()).status is DeliveryStatus.UNREACHABLE
    assert n.reachable() is False
    fake.mode = "accept"
    assert n.reachable() is True
    assert n.send(notification()).status is DeliveryStatus.DELIVERED


def test_connection_refused_cannot_have_landed(tmp_path):
    outcome = MasakariNotifier(noauth(tmp_path, free_port())).send(notification())
    assert outcome.status is DeliveryStatus.UNREACHABLE
    assert "refused" in outcome.detail.lower()


def test_session_is_built_once(fake, tmp_path, monkeypatch):
    built = []
    real = masakari_mod.ks_loading.load_session_from_conf_options

    def counting(*args, **kw):
        built.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(masakari_mod.ks_loading, "load_session_from_conf_options",
                        counting)
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    fake.mode = "error"
    n.send(notification())
    fake.mode = "accept"
    assert n.send(notification()).status is DeliveryStatus.DELIVERED
    assert n.reachable() is True
    assert len(built) == 1 and built[0]["timeout"] == 2


@pytest.mark.parametrize("text,words", [
    ("[api]\n", "auth_type is not set"),
    ("[api]\nauth_type = none\n", "endpoint"),
    ("[api]\nauth_type = no-such-plugin\n", "no-such-plugin"),
])
def test_bad_config_is_a_configuration_error_not_a_crash(tmp_path, text, words):
    n = MasakariNotifier(make_conf(tmp_path, text))
    outcome = n.send(notification())
    assert outcome.status is DeliveryStatus.MISCONFIGURED
    assert words in outcome.detail
    assert n.reachable() is False
    with pytest.raises(NotifierError):
        n.show(MU)


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
    assert outcome.status is DeliveryStatus.MISCONFIGURED   # 401 from keystone
    assert "Keystone refused" in outcome.detail
    assert PASSWORD not in outcome.detail
    assert "***" in outcome.detail                  # it was echoed, and masked
    for record in caplog.records:
        assert PASSWORD not in record.getMessage(), record.name


def test_password_auth_finds_masakari_in_the_catalog(fake, tmp_path):
    fake.keystone_ok = True
    n = MasakariNotifier(password_conf(tmp_path, fake.port))
    outcome = n.send(notification())
    assert (outcome.status, outcome.masakari_uuid) == (DeliveryStatus.DELIVERED, MU)
    assert [p for p, _ in fake.posts] == ["/v1/notifications"]
    assert fake.tokens == ["tok-123"]
    fake.held = [stored(body_of(notification()), status="running")]
    assert n.show(MU).status == "running"
    assert n.reachable() is True


def test_secrets_are_scrubbed_from_server_echoes(fake, tmp_path):
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


# -- asking Masakari what it holds ---------------------------------------------

def body_of(n, **kw):
    return {"type": n.type, "generated_time": n.generated_time,
            "payload": n.payload(), **kw}


def test_held_since_reads_every_page(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(masakari_mod, "LIST_LIMIT", 2)
    ours = notification(1000.0)
    fake.held = [stored(body_of(notification(1000.0 + i)),
                        uuid="0f7e6c58-0000-4000-8000-00000000000%d" % i, id=i)
                 for i in range(1, 6)]
    fake.held.append(stored(dict(body_of(ours), type="COMPUTE_HOST"),
                            uuid="0f7e6c58-0000-4000-8000-00000000000f", id=9))
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    held = n.held_since(ours.generated_time, "VM")
    assert sorted(h.uuid[-1] for h in held) == ["1", "2", "3", "4", "5"]
    assert held[0].payload == ours.payload()
    lists = [g for g in fake.gets if g.startswith("/v1/notifications?")]
    assert len(lists) == 4                      # 2 + 2 + 1, then an empty page
    assert "generated-since=1970-01-01T00%3A16%3A40.000000" in lists[0]
    assert "marker=" not in lists[0] and "marker=4" in lists[1]


def test_held_since_gives_up_rather_than_guess(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(masakari_mod, "LIST_LIMIT", 1)
    fake.held = [stored(body_of(notification(1000.0 + i)),
                        uuid="0f7e6c58-0000-4000-8000-00000000000%d" % i, id=i)
                 for i in range(1, 9)]
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    with pytest.raises(NotifierError) as excinfo:
        n.held_since(notification(0).generated_time)
    assert "pages" in str(excinfo.value)
    fake.mode = "down"
    with pytest.raises(NotifierError) as excinfo:
        n.held_since(notification(0).generated_time)
    assert "HTTP 503" in str(excinfo.value)


def test_show_tracks_the_engine_status(fake, tmp_path):
    fake.held = [stored(body_of(notification()), status="running")]
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    assert n.show(MU).status == "running"
    fake.held[0]["status"] = "finished"
    assert n.show(MU).status == "finished"
    with pytest.raises(NotifierError) as excinfo:
        n.show("0f7e6c58-0000-4000-8000-0000000000ff")
    assert "HTTP 404" in str(excinfo.value)
    with pytest.raises(NotifierError):
        n.show("../segments")                   # never put in a URL
    assert all("segments" not in g for g in fake.gets)


def test_reachable_is_any_answer_but_a_gateways(fake, tmp_path):
    n = MasakariNotifier(noauth(tmp_path, fake.port))
    assert n.reachable() is True
    fake.mode = "unavailable"
    assert n.reachable() is False
    assert fake.posts == []                     # a probe creates nothing


def test_entry_point_paths_stay_importable():
    from masakarimonitors_iim.notifier.log import LogNotifier
    assert MasakariNotifier.name == "masakari"
    assert LogNotifier.name == "log"
