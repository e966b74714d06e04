"""Build a monitor from the configuration.

Kept apart from the scheduler so that it has one reason to change (how
the parts are chosen and configured) and so that tests can hand the
scheduler fakes without going through the configuration.
"""
from __future__ import annotations

import time
from typing import cast

from oslo_config import cfg
from stevedore import driver

from masakarimonitors_iim.conf import options
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.db import Database, DatabaseError
from masakarimonitors_iim.hypervisor.calls import Hypervisor
from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import LifecycleEvent
from masakarimonitors_iim.monitor.lock import JournalLock
from masakarimonitors_iim.monitor.metrics import Metrics
from masakarimonitors_iim.monitor.service import Monitor
from masakarimonitors_iim.monitor.settings import settings_from_conf
from masakarimonitors_iim.monitor.systemd import SystemdNotifier
from masakarimonitors_iim.notifier import base as notifier_base
from masakarimonitors_iim.workers import WorkerPool


def load_notifier(conf: cfg.ConfigOpts) -> notifier_base.Notifier:
    name = conf[options.IIM_GROUP].notifier
    manager: driver.DriverManager = driver.DriverManager(
        notifier_base.NAMESPACE, name, invoke_on_load=True,
        invoke_args=(conf,))
    return cast(notifier_base.Notifier, manager.driver)


def build_monitor(conf: cfg.ConfigOpts) -> Monitor:
    """The real thing: libvirt, the journal database, the configured
    notifier and a pool of probe workers. Locks and opens the journal (and
    so fails here, in the caller's thread, on a bad one or one that
    another monitor uses)."""
    settings = settings_from_conf(conf)
    journal_lock = _lock_journal(settings.journal_path)
    try:
        db = Database(settings.journal_path)
    except BaseException:
        journal_lock.release()
        raise
    monitor: Monitor | None = None

    def on_event(event: LifecycleEvent) -> None:
        # Events only flow once the monitor has started the hypervisor.
        if monitor is not None:
            monitor.handle_event(event)
    try:
        # One number for concurrent agent calls, end to end: as many worker
        # threads as libvirt call slots, so a round never waits for a slot
        # inside the hypervisor layer (which would eat its own timeout);
        # the scheduler starts rounds only when a slot is free.
        hv: HypervisorAPI = Hypervisor(settings.libvirt_uri, on_event=on_event,
                                       max_agent_calls=settings.probe_workers)
        group = conf[options.IIM_GROUP]
        metrics = Metrics(db, hv, wall=time.time, host=group.metrics_host,
                          port=group.metrics_port)
        monitor = Monitor(settings, hypervisor=hv, db=db, notifier=load_notifier(conf),
                          pool=WorkerPool(settings.probe_workers),
                          clock=time.monotonic, wall=time.time, metrics=metrics,
                          systemd=SystemdNotifier.from_environment(),
                          journal_lock=journal_lock)
        return monitor
    except BaseException:
        db.close()
        journal_lock.release()
        raise


def _lock_journal(journal_path: str) -> JournalLock:
    """Before the database is opened: opening it already writes (checks,
    migrations), which a second monitor must not do under the first."""
    journal_lock = JournalLock(journal_path)
    try:
        journal_lock.acquire()
    except OSError as err:
        raise DatabaseError("journal lock %s: %s; check that its directory exists and is "
                            "writable" % (journal_lock.path,
                                          one_line(err.strerror or err))) from None
    return journal_lock
