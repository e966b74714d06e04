"""Reading one domain's counters over the shared connection.

The calls and why they are these are in
:mod:`~masakarimonitors_iim.hypervisor.stats`, which also decides what a
failed call means; this module only makes the calls. The domain handle
and the disk and interface targets come from the inventory's last
listing, so a sample adds no lookup and no XML call.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import libvirt
from oslo_log import log as logging

from masakarimonitors_iim.hypervisor import stats
from masakarimonitors_iim.hypervisor.connection import Connection
from masakarimonitors_iim.hypervisor.listing import Inventory
from masakarimonitors_iim.hypervisor.translate import Failure
from masakarimonitors_iim.hypervisor.types import Activity, AgentError, ErrorKind

LOG = logging.getLogger(__name__)


def read(connection: Connection, inventory: Inventory, uuid: str) -> Activity:
    """See :meth:`Hypervisor.domain_activity`."""
    with connection.hold() as conn:
        try:
            dom = inventory.handle(conn, uuid)
            cpu_ns = stats.cpu_ns(dom.info())
        except libvirt.libvirtError as exc:
            failure = connection.failure(conn, exc)
            raise _failed(failure, stats.sample_error(failure.kind), uuid) from None
        if cpu_ns is None:
            raise AgentError(ErrorKind.NO_DOMAIN, "domain counters: %s is not running" % uuid)
        devices = inventory.devices(uuid)
        if devices is None:
            raise AgentError(ErrorKind.OTHER, "domain counters: %s not listed since libvirt "
                             "connected, its devices are not known yet" % uuid)
        disks, interfaces = devices
        block = sum(_bytes(connection, conn, uuid, dom.blockStats, disk, stats.BLOCK_BYTES)
                    for disk in disks)
        sent = sum(_bytes(connection, conn, uuid, dom.interfaceStats, nic, stats.SENT_BYTES)
                   for nic in interfaces)
    return Activity(cpu_ns=cpu_ns, block_bytes=block, net_bytes=sent, at=time.monotonic())


def _bytes(connection: Connection, conn: libvirt.virConnect, uuid: str,
           call: Callable[[str], Any], target: str, fields: tuple[int, ...]) -> int:
    """One device's bytes; 0 for a device that is gone."""
    try:
        return stats.total(call(target), fields)
    except libvirt.libvirtError as exc:
        failure = connection.failure(conn, exc)
        kind = stats.device_error(failure.kind, failure.code)
        if kind is None:
            LOG.debug("counters of %s left out for %s: %s", target, uuid, failure.message)
            return 0
        raise _failed(failure, kind, uuid) from None


def _failed(failure: Failure, kind: ErrorKind, uuid: str) -> Exception:
    if kind is ErrorKind.CONNECTION_LOST:
        return failure.unavailable("reading counters of %s" % uuid)
    return AgentError(kind, "domain counters: %s" % failure.message,
                      failure.code, failure.domain)
