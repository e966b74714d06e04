"""The inventory: which domains run, read from events rather than re-reads.

Listing the active domains is two RPCs per interval whatever their
number (``listAllDomains`` for the active ones and for the paused ones;
neither touches QEMU). A domain's XML is fetched and parsed only when the
domain is new, runs in a new QEMU process (new domain id), or libvirt
said it changed (device added or removed, metadata changed, defined);
those events arrive on the libvirt event thread, which only marks the
domain stale here. Everything cached is dropped on a reconnect: events
sent while disconnected are lost.

The listing also keeps libvirt's domain handles, so agent calls and
counters need no lookup RPC; a handle is used only on the connection it
came from. The disk and interface targets the counters are read for come
from the same cached XML, so a counter sample needs no XML either.

Boot identity (:attr:`DomainInfo.boot_id`): the host's boot id plus the
libvirt domain id, both read without an RPC. libvirt numbers domain
starts, so a restart of the domain gets a new id; a host reboot gets a
new host boot id even if ids start again at 1. Limits: a reboot inside
the guest keeps the QEMU process and so the boot id (the REBOOTED event
covers it while the monitor runs); for a remote libvirt URI the host
boot id is not known and only the domain id is used; libvirtd that
restarts while a domain is down may hand out a number again.
"""
from __future__ import annotations

import dataclasses
import threading
import urllib.parse
from typing import Iterable

import libvirt
from oslo_log import log as logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.hypervisor.connection import Connection
from masakarimonitors_iim.hypervisor.inventory import parse_domain_xml
from masakarimonitors_iim.hypervisor.types import (
    DomainInfo,
    DomainState,
    ErrorKind,
    NovaMetadata,
)

LOG = logging.getLogger(__name__)

HOST_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def host_boot_id(uri: str, path: str = HOST_BOOT_ID_PATH) -> str:
    """This host's boot id when ``uri`` names a libvirtd on this host,
    else "" (a remote host's boot cannot be read without an RPC)."""
    if (urllib.parse.urlsplit(uri).hostname or "") not in _LOCAL_HOSTS:
        return ""
    try:
        with open(path, encoding="ascii") as f:
            return f.read(64).strip()
    except (OSError, ValueError):
        return ""


def boot_id(host_boot: str, domain_id: int) -> str:
    return "%s/%d" % (host_boot, domain_id) if host_boot else "%d" % domain_id


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What the domain's XML said, and for which run of the domain."""

    domain_id: int
    has_agent: bool
    nova: NovaMetadata | None
    disks: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()


def needs_read(cached: Parsed | None, domain_id: int, stale: bool) -> bool:
    """Whether a listed domain's XML must be fetched again."""
    return cached is None or stale or cached.domain_id != domain_id


class Inventory:
    """Listing, XML cache and domain handles of one Hypervisor."""

    def __init__(self, connection: Connection, host_boot: str = "") -> None:
        self._connection = connection
        self._host_boot = host_boot
        # Guards the fields below; never held during an RPC.
        self._lock = threading.Lock()
        self._parsed: dict[str, Parsed] = {}
        self._stale: set[str] = set()
        self._handles: dict[str, libvirt.virDomain] = {}
        self._handles_conn: libvirt.virConnect | None = None
        # Keyed by domain: one odd domain is warned about once, until it
        # reads well again or is no longer listed.
        self._unmonitored = LogOnce(LOG)

    def changed(self, uuid: str) -> None:
        """libvirt said the domain's XML changed; called on the event
        thread, so it only marks."""
        with self._lock:
            self._stale.add(uuid)

    def reset(self) -> None:
        """Forget everything cached (a new connection: events were lost)."""
        with self._lock:
            self._parsed = {}   # a new object: a listing in flight keeps nothing
            self._stale.clear()
            self._handles = {}
            self._handles_conn = None

    def handle(self, conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
        """The domain's handle on ``conn``: cached from the last listing,
        or looked up (one RPC; raises libvirtError like the lookup)."""
        with self._lock:
            dom = self._handles.get(uuid) if conn is self._handles_conn else None
        return dom if dom is not None else conn.lookupByUUIDString(uuid)

    def devices(self, uuid: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(disk targets, interface targets) from the domain's XML as of
        the last listing; None when it was not listed since the connection
        opened. No RPC: a counter sample is taken when libvirtd may be
        hanging, and must add no call it can do without."""
        with self._lock:
            facts = self._parsed.get(uuid)
        return None if facts is None else (facts.disks, facts.interfaces)

    def list(self) -> list[DomainInfo]:
        """All active domains (running, paused, ...) with state and XML facts.

        A domain that vanishes while it is being read is left out. One that
        cannot be read or whose XML cannot be parsed is left unmonitored
        (left out, or listed with has_agent False) and warned about once,
        until it reads well again; it is read again every listing, not
        cached: one odd domain must not blind the monitor to the others.
        """
        with self._lock:
            stale, self._stale = self._stale, set()
        with self._connection.hold() as conn:
            try:
                # Two listings, not virConnectGetAllDomainStats: that call
                # crashed the process (SIGSEGV inside libvirt, libvirt 9.0
                # client) when keepalive closed a hung libvirtd's connection
                # under it; listAllDomains fails cleanly there.
                listed = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                paused = {dom.UUIDString() for dom in
                          conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)}
            except libvirt.libvirtError as exc:
                with self._lock:
                    self._stale |= stale
                raise self._connection.failure(conn, exc).unavailable(
                    "listing domains") from None
            with self._lock:
                old = self._parsed
            parsed: dict[str, Parsed] = {}
            result = [info for info in (self._info(conn, dom, dom.UUIDString() in paused,
                                                   old, stale, parsed)
                                        for dom in listed) if info is not None]
            with self._lock:
                # Cleared by a reconnect meanwhile: keep nothing read on
                # the old connection.
                if self._parsed is old:
                    self._parsed = parsed
                    self._handles = {dom.UUIDString(): dom for dom in listed}
                    self._handles_conn = conn
        self._unmonitored.keep_only(dom.UUIDString() for dom in listed)
        return result

    def _info(self, conn: libvirt.virConnect, dom: libvirt.virDomain, paused: bool,
              old: dict[str, Parsed], stale: set[str],
              parsed: dict[str, Parsed]) -> DomainInfo | None:
        uuid, domain_id = dom.UUIDString(), dom.ID()   # both local, no RPC
        facts = old.get(uuid)
        if facts is None or needs_read(facts, domain_id, uuid in stale):
            facts = self._read(conn, dom, domain_id)
            if facts is None:
                return None
        if facts.domain_id >= 0:   # -1: unparsable, read again next time
            parsed[uuid] = facts
        # Only RUNNING or PAUSED from the listing (nothing decides on it;
        # the prober asks domain_state when a call fails).
        state = DomainState.PAUSED if paused else DomainState.RUNNING
        return DomainInfo(uuid=uuid, name=dom.name(), state=state, has_agent=facts.has_agent,
                          nova=facts.nova, boot_id=boot_id(self._host_boot, domain_id))

    def _read(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
              domain_id: int) -> Parsed | None:
        try:
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            failure = self._connection.failure(conn, exc)
            if failure.kind is ErrorKind.CONNECTION_LOST:
                raise failure.unavailable("reading domains") from None
            if failure.kind is not ErrorKind.NO_DOMAIN:
                self._warn_unmonitored(dom, failure.message)
            return None
        try:
            facts = parse_domain_xml(xml)
        except ValueError as exc:
            self._warn_unmonitored(dom, str(exc))
            return Parsed(-1, False, None)
        self._unmonitored.resolved(key=dom.UUIDString())
        return Parsed(domain_id, facts.has_agent, facts.nova, facts.disks, facts.interfaces)

    def _warn_unmonitored(self, dom: libvirt.virDomain, why: str) -> None:
        uuid = dom.UUIDString()
        # Once per domain whatever the reason: a reason that changes on
        # every listing (it may quote the XML) must not flood the log.
        if not self._unmonitored.active(uuid):
            self._unmonitored.problem("domain %s (%s) is not monitored: %s", uuid,
                                      dom.name(), why, key=uuid)

    def cached(self) -> Iterable[str]:
        """UUIDs whose XML facts are cached (for tests and benchmarks)."""
        with self._lock:
            return list(self._parsed)

