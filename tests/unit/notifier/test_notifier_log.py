"""The dry-run notifier and the notification helpers in notifier.base."""
from __future__ import annotations

import logging

from oslo_config import cfg

from masakarimonitors_iim.notifier.base import DeliveryStatus
from masakarimonitors_iim.notifier.base import format_generated_time
from masakarimonitors_iim.notifier.base import make_notification
from masakarimonitors_iim.notifier.log import LogNotifier

UUID = "6f1b2d3c-1111-4a5b-9c8d-0123456789ab"


def test_log_notifier_logs_and_reports_delivered(caplog):
    n = make_notification(UUID, "host1", 0.0)
    outcome = LogNotifier(cfg.ConfigOpts()).send(n)
    assert outcome.status is DeliveryStatus.DELIVERED
    [record] = [r for r in caplog.records
                if r.name == "masakarimonitors_iim.notifier.log"]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert text.startswith("would notify Masakari")
    assert UUID in text and "host1" in text and "STOPPED_FAILED" in text


def test_generated_time_is_utc_with_microseconds():
    assert format_generated_time(0.0) == "1970-01-01T00:00:00.000000"
    assert format_generated_time(1700000000.5) == "2023-11-14T22:13:20.500000"


def test_make_notification_is_a_vm_lifecycle_failure():
    n = make_notification(UUID, "host1", 0.0)
    assert (n.type, n.hostname) == ("VM", "host1")
    assert n.payload() == {"event": "LIFECYCLE", "instance_uuid": UUID,
                           "vir_domain_event": "STOPPED_FAILED"}
