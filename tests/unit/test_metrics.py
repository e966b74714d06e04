"""Metrics: values from the journal database, the hypervisor and the
rounds the scheduler applies; the endpoint, and a port that is taken."""
import dataclasses
import logging
import socket
import urllib.request

import pytest
from oslo_config import cfg
from prometheus_client.parser import text_string_to_metric_families

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.hypervisor.types import ErrorKind
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.monitor import metrics as metrics_mod
from masakarimonitors_iim.monitor.metrics import Metrics, state_families
from masakarimonitors_iim.monitor.service import Monitor
from masakarimonitors_iim.monitor.settings import settings_from_conf
from masakarimonitors_iim.notifier.base import DeliveryOutcome, DeliveryStatus, Notification
from masakarimonitors_iim.notifier.base import Notifier
from masakarimonitors_iim.outbox.store import DEAD, DELIVERED, OutboxStore
from masakarimonitors_iim.prober import ProbeRun, RoundOutcome
from masakarimonitors_iim.verdict import ProbeResult, Verdict
from tests.unit.fakes import FakeHypervisor, InlinePool

A = "11111111-1111-1111-1111-111111111111"
B = "22222222-2222-2222-2222-222222222222"
C = "33333333-3333-3333-3333-333333333333"
NOW = 10_000.0


def families(rows):
    """{(name, label values...): value} of the gauges state_families gives."""
    out = {}
    for fam in rows:
        for s in fam.samples:
            out[(s.name,) + tuple(sorted(s.labels.values()))] = s.value
    return out


@pytest.mark.parametrize("states, outbox, expected", [
    ([], [], {("masakari_iim_domains", "HEALTHY"): 0.0,
              ("masakari_iim_notifications", "pending"): 0.0,
              ("masakari_iim_outbox_pending",): 0.0,
              ("masakari_iim_outbox_oldest_pending_age_seconds",): 0.0}),
    ([State.HEALTHY, State.HEALTHY, State.REPORTED], [],
     {("masakari_iim_domains", "HEALTHY"): 2.0, ("masakari_iim_domains", "REPORTED"): 1.0,
      ("masakari_iim_domains", "FAILING"): 0.0, ("masakari_iim_domains", "DISCOVERY"): 0.0}),
    ([], [("pending", NOW - 30), ("pending", NOW - 90), ("delivered", NOW - 5000),
          ("dead", NOW - 7000)],
     {("masakari_iim_notifications", "pending"): 2.0,
      ("masakari_iim_notifications", "delivered"): 1.0,
      ("masakari_iim_notifications", "dead"): 1.0,
      ("masakari_iim_outbox_pending",): 2.0,
      # the oldest *pending* one, not the older delivered or dead rows
      ("masakari_iim_outbox_oldest_pending_age_seconds",): 90.0}),
    # a row created "after" now (the wall clock stepped back) is age 0, not negative
    ([], [("pending", NOW + 50)], {("masakari_iim_outbox_oldest_pending_age_seconds",): 0.0}),
])
def test_state_gauges(states, outbox, expected):
    got = families(state_families(states, outbox, NOW))
    for key, value in expected.items():
        assert got[key] == value, key


@pytest.fixture
def db(tmp_path):
    d = Database(str(tmp_path / "journal.sqlite"))
    yield d
    d.close()


def record(uuid, state):
    return dataclasses.replace(machine.new_record(uuid, "vm-" + uuid[:4], NOW - 500),
                               state=state)


def test_collector_reads_the_journal_and_outbox_at_scrape_time(db):
    hv = FakeHypervisor()
    m = Metrics(db, hv, wall=lambda: NOW)
    journal, outbox = JournalStore(db), OutboxStore(db)
    value = m.registry.get_sample_value
    assert value("masakari_iim_domains", {"state": "HEALTHY"}) == 0.0

    journal.save(record(A, State.HEALTHY))
    journal.save(record(B, State.REPORTED))
    journal.save(record(C, State.REPORTED))
    for uuid, created in ((B, NOW - 120), (C, NOW - 40)):
        outbox.add(Notification(uuid, "compute-1", "2026-01-01T00:00:00.000000"), 1,
                   "agent timeout", created)
    first = outbox.pending()[0]
    outbox.settle(first.id, DELIVERED, NOW)

    # no hook was called: the next scrape sees the database as it is now
    assert value("masakari_iim_domains", {"state": "HEALTHY"}) == 1.0
    assert value("masakari_iim_domains", {"state": "REPORTED"}) == 2.0
    assert value("masakari_iim_notifications", {"status": "pending"}) == 1.0
    assert value("masakari_iim_notifications", {"status": "delivered"}) == 1.0
    assert value("masakari_iim_notifications", {"status": DEAD}) == 0.0
    assert value("masakari_iim_outbox_pending") == 1.0
    assert value("masakari_iim_outbox_oldest_pending_age_seconds") == 40.0
    assert value("masakari_iim_journal_readable") == 1.0


def test_libvirt_connection_state_is_read_at_scrape_time(db):
    hv = FakeHypervisor()
    m = Metrics(db, hv, wall=lambda: NOW)
    assert m.registry.get_sample_value("masakari_iim_libvirt_connected") == 1.0
    hv.up = False
    assert m.registry.get_sample_value("masakari_iim_libvirt_connected") == 0.0


def test_an_unreadable_database_is_a_gauge_and_one_warning(tmp_path, caplog):
    db = Database(str(tmp_path / "journal.sqlite"))
    m = Metrics(db, FakeHypervisor(), wall=lambda: NOW)
    db.close()
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert m.registry.get_sample_value("masakari_iim_journal_readable") == 0.0
        assert m.registry.get_sample_value("masakari_iim_libvirt_connected") == 1.0
        assert m.registry.get_sample_value("masakari_iim_outbox_pending") is None
    warnings = [r for r in caplog.records if "cannot read the journal" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def run(name, seconds, verdict=Verdict.HEALTHY, skipped=False):
    return ProbeRun(name, ProbeResult(verdict, ""), seconds, skipped)


def test_rounds_count_verdicts_and_probe_latency_by_probe_type(db):
    m = Metrics(db, FakeHypervisor(), wall=lambda: NOW)
    value = m.registry.get_sample_value
    m.round_applied(RoundOutcome(ProbeResult.healthy(), probes=(
        run("ping", 0.003), run("exec", 0.4))), Verdict.HEALTHY)
    m.round_applied(RoundOutcome(ProbeResult.failed("x"), probes=(
        run("ping", 2.0, Verdict.FAILED),
        # blocked by the guest: it did not run, so it has no latency
        run("exec", 0.0, Verdict.UNKNOWN, skipped=True))), Verdict.FAILED)
    # the prober said FAILED, the scheduler applied UNKNOWN (a disconnect grace)
    m.round_applied(RoundOutcome(ProbeResult.failed("x"), probes=(
        run("ping", 0.002, Verdict.FAILED),)), Verdict.UNKNOWN)

    assert value("masakari_iim_verdicts_total", {"verdict": "HEALTHY"}) == 1.0
    assert value("masakari_iim_verdicts_total", {"verdict": "FAILED"}) == 1.0
    assert value("masakari_iim_verdicts_total", {"verdict": "UNKNOWN"}) == 1.0
    ping = {"probe": "ping"}
    assert value("masakari_iim_probe_duration_seconds_count", ping) == 3.0
    assert value("masakari_iim_probe_duration_seconds_sum", ping) == pytest.approx(2.005)
    assert value("masakari_iim_probe_duration_seconds_bucket", dict(ping, le="0.005")) == 2.0
    assert value("masakari_iim_probe_duration_seconds_count", {"probe": "exec"}) == 1.0


class NullNotifier(Notifier):
    name = "null"

    def __init__(self):
        pass

    def send(self, notification):
        return DeliveryOutcome(DeliveryStatus.DELIVERED, "fake")


def test_the_scheduler_counts_each_round_it_applies(tmp_path):
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    conf.set_override("journal_path", str(tmp_path / "journal.sqlite"),
                      group="introspectiveinstancemonitor")
    db = Database(str(tmp_path / "journal.sqlite"))
    hv = FakeHypervisor()
    hv.add(A, "vm-a")
    hv.add(B, "vm-b")
    hv.behaviour[B] = ErrorKind.AGENT_TIMEOUT
    t = [1000.0]
    mon = Monitor(settings_from_conf(conf), hypervisor=hv, db=db, notifier=NullNotifier(),
                  pool=InlinePool(), clock=lambda: t[0], wall=lambda: NOW,
                  spread=lambda: 0.0)
    mon.results.recover()
    for _ in range(3):
        mon.step(wait=False)
        mon.step(wait=False)     # apply what the jobs posted
        t[0] += 10.0
    value = mon.metrics.registry.get_sample_value
    assert value("masakari_iim_verdicts_total", {"verdict": "HEALTHY"}) == 3.0
    assert value("masakari_iim_verdicts_total", {"verdict": "FAILED"}) == 3.0
    assert value("masakari_iim_probe_duration_seconds_count", {"probe": "ping"}) == 6.0
    assert value("masakari_iim_domains", {"state": "HEALTHY"}) == 1.0
    db.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_endpoint_serves_the_registry_over_http(db):
    m = Metrics(db, FakeHypervisor(), wall=lambda: NOW, host="127.0.0.1", port=free_port())
    assert m.start()
    try:
        m.round_applied(RoundOutcome(ProbeResult.healthy(), probes=(run("ping", 0.01),)),
                        Verdict.HEALTHY)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % m.port, timeout=5) as r:
            assert r.status == 200
            text = r.read().decode()
    finally:
        m.stop()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"masakari_iim_domains", "masakari_iim_probe_duration_seconds",
            "masakari_iim_verdicts", "masakari_iim_notifications",
            "masakari_iim_outbox_pending", "masakari_iim_outbox_oldest_pending_age_seconds",
            "masakari_iim_libvirt_connected"} <= names
    # nothing of prometheus-client's global registry (process, gc, platform)
    assert not any(n.startswith(("process_", "python_")) for n in names)
    with pytest.raises(OSError):
        urllib.request.urlopen("http://127.0.0.1:%d/metrics" % m.port, timeout=2)


def test_port_zero_is_off(db):
    m = Metrics(db, FakeHypervisor(), wall=lambda: NOW, port=0)
    assert not m.start()
    m.stop()


def test_a_port_in_use_costs_the_metrics_with_one_line_not_the_monitor(db, caplog):
    caplog.set_level(logging.INFO)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        m = Metrics(db, FakeHypervisor(), wall=lambda: NOW, host="127.0.0.1", port=port)
        assert not m.start()
    m.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert "\n" not in line and "127.0.0.1:%d" % port in line and "metrics_port" in line


#: Counters: prometheus-client names their sample with ``_total``.
COUNTERS = ("masakari_iim_verdicts", "masakari_iim_rechecks")


def test_prefix_and_docstring_name_every_metric(db):
    m = Metrics(db, FakeHypervisor(), wall=lambda: NOW)
    m.round_applied(RoundOutcome(ProbeResult.healthy(), probes=(run("ping", 0.01),)),
                    Verdict.HEALTHY)
    names = {metric.name for metric in m.registry.collect()}
    assert names and all(n.startswith("masakari_iim_") for n in names)
    for name in names:
        shown = name + "_total" if name in COUNTERS else name
        assert "``%s" % shown in metrics_mod.__doc__, name


@pytest.mark.parametrize("text, words", [
    ("metrics_port = 70000\n", "metrics_port"),
    ("metrics_port = -1\n", "metrics_port"),
    ("metrics_host = not a host!\n", "metrics_host"),
])
def test_bad_metrics_options_stop_the_start_with_one_line(tmp_path, text, words):
    path = tmp_path / "masakarimonitors.conf"
    path.write_text("[introspectiveinstancemonitor]\n" + text)
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf(["--config-file", str(path)], project="masakarimonitors", default_config_files=[])
    with pytest.raises(iim_conf.ConfigError) as err:
        iim_conf.validate(conf)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_metrics_are_off_by_default_and_local_when_on():
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    group = conf.introspectiveinstancemonitor
    assert (group.metrics_port, group.metrics_host) == (0, "127.0.0.1")
