"""What masakari-api's answers mean, from a table (no sockets)."""
from __future__ import annotations

import json

import pytest

from masakarimonitors_iim.notifier import answers
from masakarimonitors_iim.notifier.answers import Answer
from masakarimonitors_iim.notifier.base import DeliveryStatus as S

MU = "0f7e6c58-0000-4000-8000-000000000001"
JSON = "application/json"


def js(code, body, **kw):
    return Answer(code, JSON, json.dumps(body).encode(), **kw)


def fault(code, message, kind="badRequest"):
    return js(code, {kind: {"code": code, "message": message}})


NOTE = {"notification_uuid": MU, "type": "VM", "status": "new",
        "generated_time": "2024-01-01T00:00:00.000000",
        "payload": {"event": "LIFECYCLE"}}


@pytest.mark.parametrize("answer,status,words", [
    (js(202, {"notification": NOTE}), S.DELIVERED, "accepted as notification " + MU),
    (js(200, {"notification": NOTE}), S.DELIVERED, "(status new)"),
    # 2xx without a notification: not delivered, whatever answered
    (Answer(200, "text/html", b"<html>Welcome to nginx!</html>"), S.MISCONFIGURED,
     "HTTP 200 (text/html) without a notification"),
    (js(202, {"notification": dict(NOTE, notification_uuid="42")}),
     S.MISCONFIGURED, "without a notification"),
    (js(202, {"notifications": [NOTE]}), S.MISCONFIGURED, "[api] endpoint"),
    (Answer(204), S.MISCONFIGURED, "no content type"),
    (Answer(202, JSON, json.dumps({"notification": NOTE}).encode()[:40],
            truncated=True), S.MISCONFIGURED, "without a notification"),
    (Answer(301, location="https://masakari/v1/notifications"),
     S.MISCONFIGURED, "redirect to https://masakari/v1/notifications"),
    (fault(409, "Notification received from host h of type VM is duplicate.",
           "conflict"), S.DUPLICATE, "is duplicate"),
    # a host merely named like it: a real duplicate, kept and checked
    (fault(409, "Notification received from host maintenance-01 of type 'VM' "
           "is ignored as it is a duplicate", "conflict"), S.DUPLICATE, "duplicate"),
    (fault(409, "... is ignored as the host is already under maintenance.",
           "conflict"), S.REJECTED, "under maintenance"),
    (fault(400, "Host with name compute-1 could not be found."),
     S.MISCONFIGURED, "or add the host to a segment"),
    (fault(400, "Invalid input for field/attribute payload."), S.REJECTED,
     "HTTP 400: Invalid input"),
    (fault(401, "Authentication required", "unauthorized"), S.MISCONFIGURED,
     "[api] credentials"),
    (fault(403, "Policy doesn't allow", "forbidden"), S.MISCONFIGURED, "policy"),
    (fault(404, "Not found", "itemNotFound"), S.MISCONFIGURED, "[api] endpoint"),
    (fault(408, "slow"), S.RETRY, "HTTP 408"),
    (fault(429, "slow down", "overLimit"), S.RETRY, "HTTP 429"),
    (fault(500, "Unexpected API Error.", "computeFault"), S.RETRY, "HTTP 500"),
    (Answer(502, "text/html", b"<h1>Bad Gateway</h1>"), S.UNREACHABLE,
     "HTTP 502: <h1>Bad Gateway</h1>"),
    (Answer(503), S.UNREACHABLE, "HTTP 503"),
    (Answer(504), S.UNREACHABLE, "HTTP 504"),
    (Answer(500, "text/plain", b"x" * 300, truncated=True), S.RETRY, "(cut)"),
])
def test_classify_post(answer, status, words):
    outcome = answers.classify_post(answer, "compute-1")
    assert outcome.status is status
    assert words in outcome.detail
    assert len(outcome.detail) < 600 and "\n" not in outcome.detail
    assert (outcome.masakari_uuid == MU) is (status is S.DELIVERED)


def test_host_unknown_names_the_host_and_the_option():
    outcome = answers.classify_post(
        fault(400, "Host with name compute-1 could not be found."), "compute-1")
    # what to fix comes first: status shows about 160 characters of it
    assert outcome.detail.startswith("Masakari does not know host 'compute-1': "
                                     "set [DEFAULT] hostname")
    assert outcome.detail.index("failover segment") < 120
    assert "kept and retried" in outcome.detail and "HTTP 400" in outcome.detail


def test_parse_list_and_show():
    notes, ids = answers.parse_list(js(200, {"notifications": [
        dict(NOTE, id=7), dict(NOTE, id=3, status="finished")]}))
    assert [n.status for n in notes] == ["new", "finished"] and ids == [7, 3]
    assert answers.parse_show(js(200, {"notification": NOTE})).uuid == MU
    for bad in (js(200, {"notifications": [{"id": 1}]}), js(200, {}),
                Answer(200, JSON, b"[", truncated=True), fault(500, "boom")):
        with pytest.raises(ValueError):
            answers.parse_list(bad)
    for bad in (js(200, {}), fault(404, "No notification", "itemNotFound")):
        with pytest.raises(ValueError):
            answers.parse_show(bad)
