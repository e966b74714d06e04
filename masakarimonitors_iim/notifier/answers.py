"""What masakari-api's answers mean: pure functions, no I/O.

:mod:`masakarimonitors_iim.notifier.masakari` makes the requests; this
module turns a (bounded) HTTP answer into a delivery outcome or the
notifications Masakari says it holds. Kept apart so every status code and
body shape can be tested from a table.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.notifier.base import DeliveryOutcome
from masakarimonitors_iim.notifier.base import DeliveryStatus as S
from masakarimonitors_iim.notifier.base import HeldNotification

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

#: Longest server message quoted in an outcome.
_MAX_MESSAGE = 300

#: Masakari's HostNotFoundByName, answered with 400 to a notification from
#: a host that is in no failover segment (or is named differently there).
_HOST_UNKNOWN = re.compile(r"host with name .* could not be found", re.I)


@dataclasses.dataclass(frozen=True)
class Answer:
    """One HTTP answer, with at most a capped prefix of its body."""

    status: int
    content_type: str = ""
    body: bytes = b""
    truncated: bool = False
    location: str = ""


def is_uuid(text: object) -> bool:
    return isinstance(text, str) and bool(_UUID.match(text))


def json_body(answer: Answer) -> Any:
    """The body as JSON, or None (not JSON, or cut by the cap)."""
    if answer.truncated or not answer.body:
        return None
    try:
        return json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def server_message(answer: Answer) -> str:
    """The server's own words: Masakari's fault message when there is one
    ({"conflict": {"code": 409, "message": "..."}}), else the body's start."""
    data = json_body(answer)
    if isinstance(data, dict) and len(data) == 1:
        (fault,) = data.values()
        if isinstance(fault, dict) and isinstance(fault.get("message"), str):
            return one_line(fault["message"], _MAX_MESSAGE)
    text = one_line(answer.body, _MAX_MESSAGE)
    return text + (" (cut)" if answer.truncated and text else "")


def _kind(answer: Answer) -> str:
    return one_line(answer.content_type.split(";")[0], 60) or "no content type"


def held(data: Any) -> HeldNotification | None:
    """One notification of Masakari's JSON, or None if it is not one."""
    if not isinstance(data, dict):
        return None
    uuid = data.get("notification_uuid")
    payload = data.get("payload")
    fields = (data.get("type"), data.get("generated_time"), data.get("status"))
    if not (is_uuid(uuid) and isinstance(payload, dict)
            and all(isinstance(f, str) for f in fields)):
        return None
    return HeldNotification(uuid=str(uuid), type=str(data["type"]),
                            generated_time=str(data["generated_time"]),
                            payload=payload, status=str(data["status"]))


def classify_post(answer: Answer, hostname: str) -> DeliveryOutcome:
    """What the answer to ``POST /notifications`` means for the notification."""
    code = answer.status
    message = server_message(answer)
    said = "HTTP %d: %s" % (code, message) if message else "HTTP %d" % code
    if 200 <= code < 300:
        body = json_body(answer)
        note = held(body.get("notification")) if isinstance(body, dict) else None
        if note is not None:
            return DeliveryOutcome(
                S.DELIVERED, "accepted as notification %s (status %s)"
                % (note.uuid, one_line(note.status, 40)),
                masakari_uuid=note.uuid, engine_status=note.status)
        return DeliveryOutcome(
            S.MISCONFIGURED, "HTTP %d (%s) without a notification in the body: "
            "the endpoint does not behave like Masakari's API; check [api] "
            "endpoint (or the catalog's instance-ha endpoint)"
            % (code, _kind(answer)))
    if 300 <= code < 400:
        return DeliveryOutcome(
            S.MISCONFIGURED, "HTTP %d redirect to %s: set [api] endpoint to "
            "Masakari's API itself" % (code, one_line(answer.location, 200) or "?"))
    if code == 409:
        if "already under maintenance" in message.lower():
            # Masakari ignores notifications from a host under maintenance
            # on purpose; a late success would recover a VM hours after
            # the fact. A dead letter an operator can re-queue.
            return DeliveryOutcome(S.REJECTED, said)
        return DeliveryOutcome(S.DUPLICATE, said)
    if code == 400 and _HOST_UNKNOWN.search(message):
        # The fix first: status shows the start of this text.
        return DeliveryOutcome(
            S.MISCONFIGURED, "Masakari does not know host %r: set [DEFAULT] "
            "hostname to this host's name in its failover segment, or add the "
            "host to a segment; the notification is kept and retried (%s)"
            % (one_line(hostname, 100), said))
    if code in (401, 403, 407):
        return DeliveryOutcome(
            S.MISCONFIGURED, "%s; check the [api] credentials and Masakari's "
            "policy for notifications" % said)
    if code in (404, 405):
        return DeliveryOutcome(
            S.MISCONFIGURED, "%s; check [api] endpoint (or the catalog's "
            "instance-ha endpoint, region and api_interface)" % said)
    if code in (408, 429):
        return DeliveryOutcome(S.RETRY, said)
    if 400 <= code < 500:
        return DeliveryOutcome(S.REJECTED, said)
    if code in (502, 503, 504):
        # A gateway or load balancer in front of an API that is not there.
        return DeliveryOutcome(S.UNREACHABLE, said)
    return DeliveryOutcome(S.RETRY, said)


def parse_list(answer: Answer) -> tuple[list[HeldNotification], list[int]]:
    """``GET /notifications``: the notifications and their integer ids
    (Masakari's pagination marker). Raises ValueError on anything else."""
    if answer.status != 200:
        raise ValueError("HTTP %d: %s" % (answer.status, server_message(answer)))
    if answer.truncated:
        raise ValueError("the notification list is longer than the %d bytes "
                         "read" % len(answer.body))
    data = json_body(answer)
    items = data.get("notifications") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("HTTP 200 (%s) without a notification list"
                         % _kind(answer))
    notes, ids = [], []
    for item in items:
        note = held(item)
        if note is None:
            raise ValueError("a listed notification lacks uuid, type, "
                             "generated_time, payload or status")
        notes.append(note)
        if isinstance(item.get("id"), int):
            ids.append(item["id"])
    return notes, ids


def parse_show(answer: Answer) -> HeldNotification:
    """``GET /notifications/<uuid>``; raises ValueError on anything else."""
    if answer.status != 200:
        raise ValueError("HTTP %d: %s" % (answer.status, server_message(answer)))
    data = json_body(answer)
    note = held(data.get("notification")) if isinstance(data, dict) else None
    if note is None:
        raise ValueError("HTTP 200 (%s) without a notification in the body"
                         % _kind(answer))
    return note
