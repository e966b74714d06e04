"""The inventory from events (hypervisor.listing) and boot identity.

Pure parts are tables; the rest runs against libvirt's test driver (see
hv_libvirt), counting the RPCs the inventory makes.
"""
from __future__ import annotations

import dataclasses
import time

import libvirt
import pytest
from hv_libvirt import Events, FakeOpen, patch_open, start

from masakarimonitors_iim.hypervisor import listing
from masakarimonitors_iim.hypervisor.listing import Parsed, boot_id, host_boot_id, needs_read
from masakarimonitors_iim.hypervisor.types import EventKind

# -- pure ------------------------------------------------------------------------

CACHED = Parsed(domain_id=7, has_agent=True, nova=None)


@pytest.mark.parametrize("cached,domain_id,stale,expected", [
    (None, 7, False, True),       # new domain
    (CACHED, 7, False, False),    # steady state: no RPC
    (CACHED, 7, True, True),      # device added/removed, metadata changed, defined
    (CACHED, 8, False, True),     # new QEMU process (restarted)
    (CACHED, 8, True, True),
])
def test_needs_read(cached, domain_id, stale, expected):
    assert needs_read(cached, domain_id, stale) is expected


@pytest.mark.parametrize("uri,local", [
    ("qemu:///system", True),
    ("qemu+unix:///system?socket=/tmp/x/libvirt-sock", True),
    ("qemu+tcp://localhost/system", True),
    ("qemu+ssh://root@compute-7/system", False),
    ("qemu+tls://10.0.0.5/system", False),
])
def test_host_boot_id_only_for_local_uris(tmp_path, uri, local):
    path = tmp_path / "boot_id"
    path.write_text("3f1c0d3e-0000-4000-8000-000000000001\n")
    assert host_boot_id(uri, str(path)) == ("3f1c0d3e-0000-4000-8000-000000000001"
                                           if local else "")


def test_unreadable_host_boot_id_is_empty(tmp_path):
    assert host_boot_id("qemu:///system", str(tmp_path / "missing")) == ""


@pytest.mark.parametrize("host,domain_id,expected", [
    ("b00t", 12, "b00t/12"),
    ("", 12, "12"),
])
def test_boot_id(host, domain_id, expected):
    assert boot_id(host, domain_id) == expected


# -- against the test driver --------------------------------------------------------

class Counting:
    """Counts the RPCs a ConnProxy and its domains make, by name."""

    def __init__(self, monkeypatch) -> None:
        self.counts: dict[str, int] = {}
        for name in ("XMLDesc", "state", "info"):
            self._wrap(monkeypatch, libvirt.virDomain, name)
        for name in ("listAllDomains", "lookupByUUIDString"):
            self._wrap(monkeypatch, libvirt.virConnect, name)

    def _wrap(self, monkeypatch, cls, name):
        real = getattr(cls, name)

        def counted(obj, *args, **kwargs):
            self.counts[name] = self.counts.get(name, 0) + 1
            return real(obj, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    def take(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


def _listed(hv, uuid):
    return next(i for i in hv.list_running_domains() if i.uuid == uuid)


def test_steady_state_listing_is_one_rpc(hv, events, domains, monkeypatch):
    made = [domains.make() for _ in range(5)]
    for dom in made:
        events.of(dom.UUIDString(), 2)   # a late DEFINED event would mark it stale
    counting = Counting(monkeypatch)
    first = {i.uuid for i in hv.list_running_domains()}
    assert {d.UUIDString() for d in made} <= first
    assert counting.take()["XMLDesc"] == len(first)
    for _ in range(3):
        hv.list_running_domains()
        assert counting.take() == {"listAllDomains": 2}


def test_restart_rereads_and_changes_the_boot_id(hv, domains, monkeypatch):
    dom = domains.make()
    uuid = dom.UUIDString()
    before = _listed(hv, uuid).boot_id
    counting = Counting(monkeypatch)
    dom.destroy()
    dom.create()
    after = _listed(hv, uuid).boot_id
    assert before and after and before != after
    assert after.endswith("/%d" % dom.ID())
    assert counting.take()["XMLDesc"] == 1
    assert _listed(hv, uuid).boot_id == after


def test_change_events_mark_the_domain_stale(domains, monkeypatch):
    fake = patch_open(monkeypatch, FakeOpen())
    events = Events()
    h = start(events)
    try:
        assert h.wait_connected(5)
        dom = domains.make()
        uuid = dom.UUIDString()
        events.of(uuid, 2)
        _listed(h, uuid)
        counting = Counting(monkeypatch)
        for event_id, args in ((libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, ("net1",)),
                               (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, ("net1",)),
                               (libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                                (libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                                 "http://openstack.org/xmlns/libvirt/nova/1.1"))):
            fake.conns[0].fire(event_id, dom, *args)
            _listed(h, uuid)
            assert counting.take().get("XMLDesc") == 1, event_id
            _listed(h, uuid)
            assert "XMLDesc" not in counting.take()
    finally:
        h.stop()


def test_defined_event_marks_the_domain_stale(hv, domains, monkeypatch):
    dom = domains.make()
    uuid = dom.UUIDString()
    _listed(hv, uuid)
    counting = Counting(monkeypatch)
    domains.conn.defineXML(dom.XMLDesc(0))   # redefined while running
    deadline = time.monotonic() + 5
    while "XMLDesc" not in counting.counts:
        assert time.monotonic() < deadline
        _listed(hv, uuid)
        time.sleep(0.02)


def test_metadata_change_is_seen_in_the_next_listing(hv, domains):
    dom = domains.make(nova=True)
    uuid = dom.UUIDString()
    assert _listed(hv, uuid).nova.instance_name == "web-01"
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    "<instance><name>web-02</name></instance>", "nova",
                    "http://openstack.org/xmlns/libvirt/nova/1.1",
                    libvirt.VIR_DOMAIN_AFFECT_LIVE)
    deadline = time.monotonic() + 5
    while _listed(hv, uuid).nova.instance_name != "web-02":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_reconnect_drops_the_cache(domains, monkeypatch):
    fake = patch_open(monkeypatch, FakeOpen())
    events = Events()
    h = start(events)
    try:
        assert h.wait_connected(5)
        dom = domains.make()
        _listed(h, dom.UUIDString())
        assert dom.UUIDString() in h._inventory.cached()
        fake.conns[0].lose()
        events.kind(EventKind.CONNECTION_RESTORED)
        assert list(h._inventory.cached()) == []
        counting = Counting(monkeypatch)
        _listed(h, dom.UUIDString())
        assert counting.take()["XMLDesc"] >= 1
    finally:
        h.stop()


def test_a_handle_from_the_old_connection_is_never_used_on_the_new_one(
        domains, fake_agent, monkeypatch):
    fake = patch_open(monkeypatch, FakeOpen())
    events = Events()
    h = start(events)
    try:
        assert h.wait_connected(5)
        dom = domains.make()
        _listed(h, dom.UUIDString())
        fake.conns[0].lose()
        events.kind(EventKind.CONNECTION_RESTORED)
        counting = Counting(monkeypatch)
        assert h.agent_command(dom.UUIDString(), "guest-ping") == {}
        assert counting.take()["lookupByUUIDString"] == 1   # not the stale handle
    finally:
        h.stop()


def test_gone_domains_leave_the_cache(hv, domains):
    dom = domains.make()
    _listed(hv, dom.UUIDString())
    dom.destroy()
    hv.list_running_domains()
    assert dom.UUIDString() not in hv._inventory.cached()


def test_listed_handles_spare_the_lookup_rpc(hv, domains, fake_agent, monkeypatch):
    dom = domains.make()
    hv.list_running_domains()
    counting = Counting(monkeypatch)
    assert hv.agent_command(dom.UUIDString(), "guest-ping") == {}
    assert "lookupByUUIDString" not in counting.take()
    unlisted = domains.make()
    hv.agent_command(unlisted.UUIDString(), "guest-ping")
    assert counting.take()["lookupByUUIDString"] == 1


def test_the_listing_keeps_the_device_targets(domains, monkeypatch):
    """What domain_activity reads counters for, without an XML call of
    its own: cached with the rest, read again with the rest, dropped on a
    reconnect."""
    fake = patch_open(monkeypatch, FakeOpen())
    events = Events()
    h = start(events)
    try:
        assert h.wait_connected(5)
        dom = domains.make(devices="<disk type='file' device='disk'><source file='/img/a'/>"
                                   "<target dev='vda' bus='virtio'/></disk>"
                                   "<interface type='network'><source network='default'/>"
                                   "</interface>")
        uuid = dom.UUIDString()
        assert h._inventory.devices(uuid) is None
        _listed(h, uuid)
        assert h._inventory.devices(uuid) == (("vda",), ("testnet0",))
        fake.conns[0].fire(libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, dom, "vda")
        real_parse = listing.parse_domain_xml
        monkeypatch.setattr(listing, "parse_domain_xml",
                            lambda xml: dataclasses.replace(real_parse(xml), disks=()))
        _listed(h, uuid)
        assert h._inventory.devices(uuid) == ((), ("testnet0",))
        fake.conns[0].lose()
        events.kind(EventKind.CONNECTION_RESTORED)
        assert h._inventory.devices(uuid) is None
    finally:
        h.stop()


def test_cache_is_bounded_by_the_listing(hv, domains):
    made = [domains.make() for _ in range(3)]
    hv.list_running_domains()
    for dom in made:
        dom.destroy()
    hv.list_running_domains()
    assert not {d.UUIDString() for d in made} & set(hv._inventory.cached())


def test_listing_module_never_reads_state_per_domain(hv, domains, monkeypatch):
    """The per-domain state() RPC is gone: state comes with the listing."""
    domains.make().suspend()
    counting = Counting(monkeypatch)
    hv.list_running_domains()
    assert "state" not in counting.take()
    assert listing.Inventory.list.__doc__
