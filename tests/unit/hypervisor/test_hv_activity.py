"""Domain counters (hypervisor.stats, hypervisor.counters,
Hypervisor.domain_activity).

The pure rules are tables; the sampling runs against libvirt's test
driver, which keeps CPU time and per-disk and per-interface counters
(derived from the clock), so the calls made and the sums are checked
against what the driver really answered. Failures are the driver's own
errors where it has them, recorded ones (hv_recorded) where it has not.
"""
from __future__ import annotations

import dataclasses
import time
import uuid as uuidlib

import hv_recorded
import libvirt
import pytest

from masakarimonitors_iim.hypervisor import errors, listing, stats
from masakarimonitors_iim.hypervisor.types import (
    AgentError,
    ErrorKind,
    HypervisorUnavailable,
)

# -- pure ------------------------------------------------------------------------

# What libvirt 9.0's QEMU driver returns (virDomainBlockStats,
# virDomainInterfaceStats; -1 where a driver keeps no such counter).
BLOCK = (6077, 153219584, 310, 2564096, -1)
NET = (9120, 80, 0, 0, 1146, 15, 0, 0)


@pytest.mark.parametrize("reply,fields,expected", [
    (BLOCK, stats.BLOCK_BYTES, 153219584 + 2564096),
    # only what the guest sent: received traffic reaches a dead guest too
    (NET, stats.SENT_BYTES, 1146),
    ((1, -1, 1, 7, 0), stats.BLOCK_BYTES, 7),       # -1: not kept
    ((1, 5), stats.BLOCK_BYTES, 5),                 # short reply
    ((), stats.SENT_BYTES, 0),
    ((0, "9", 0, 9.5, 0), stats.BLOCK_BYTES, 0),    # wrong types
    ((0, True, 0, 3, 0), stats.BLOCK_BYTES, 3),     # bool is no counter
    ((0, 2**63 - 1, 0, 1, 0), stats.BLOCK_BYTES, 2**63),
])
def test_total(reply, fields, expected):
    assert stats.total(reply, fields) == expected


@pytest.mark.parametrize("info,expected", [
    ([1, 2097152, 2097152, 1, 3214000000], 3214000000),   # running
    ([3, 2097152, 2097152, 1, 3214000000], 3214000000),   # paused: still comparable
    ([7, 2097152, 2097152, 1, 5], 5),                     # pm-suspended
    ([5, 2097152, 2097152, 1, 0], None),                  # shut off
    ([1, 2097152, 2097152, 1, -1], 0),
    ([1, 2097152, 2097152, 1], None),                     # short reply
    ([], None),
])
def test_cpu_ns(info, expected):
    assert stats.cpu_ns(info) == expected


BUSY = (68, 10, "Timed out during operation: cannot acquire state change lock (held by "
                "monitor=remoteDispatchDomainBlockStats)")
QEMU_FAILED = (1, 10, "internal error: unable to execute QEMU command 'query-blockstats': "
                      "simulated")


@pytest.mark.parametrize("error,expected", [
    # the device is not there (hot-unplugged since the listing): skipped
    (hv_recorded.TEST_DRIVER_NO_DISK, None),
    (hv_recorded.TEST_DRIVER_NO_INTERFACE, None),
    ((3, 10, "this function is not supported by the connection driver: "
             "virDomainInterfaceStats"), None),
    # everything else fails the whole sample
    (hv_recorded.SOCKET_CLOSED, ErrorKind.CONNECTION_LOST),
    (hv_recorded.KEEPALIVE_TIMEOUT, ErrorKind.CONNECTION_LOST),
    (hv_recorded.TEST_DRIVER_NO_DOMAIN, ErrorKind.NO_DOMAIN),
    (hv_recorded.TEST_DRIVER_NOT_RUNNING, ErrorKind.NO_DOMAIN),   # stopped meanwhile
    (BUSY, ErrorKind.AGENT_BUSY),                 # not once per device
    (QEMU_FAILED, ErrorKind.COMMAND_FAILED),      # back next time would look like I/O
    ((9, 10, "operation failed: simulated"), ErrorKind.OTHER),
])
def test_device_error(error, expected):
    code, domain, message = error
    assert stats.device_error(errors.classify(code, domain, message), code) is expected


@pytest.mark.parametrize("kind,expected", [
    (ErrorKind.DOMAIN_NOT_RUNNING, ErrorKind.NO_DOMAIN),
    (ErrorKind.NO_DOMAIN, ErrorKind.NO_DOMAIN),
    (ErrorKind.UNSUPPORTED, ErrorKind.UNSUPPORTED),
    (ErrorKind.CONNECTION_LOST, ErrorKind.CONNECTION_LOST),
])
def test_sample_error(kind, expected):
    assert stats.sample_error(kind) is expected


# -- against the test driver --------------------------------------------------------

DEVICES = """
  <disk type='file' device='disk'><source file='/img/a'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='/img/b'/><target dev='vdb' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><source file='/img/c.iso'/><target dev='hdc' bus='ide'/></disk>
  <interface type='network'><source network='default'/></interface>
  <interface type='network'><source network='default'/></interface>
"""


class Recording:
    """Wraps the per-domain calls: what was asked, what the driver said."""

    NAMES = ("info", "blockStats", "interfaceStats", "XMLDesc", "getAllDomainStats",
             "domainListGetStats", "listAllDomains", "lookupByUUIDString")

    def __init__(self, monkeypatch, fail: dict[tuple[str, str], tuple] | None = None) -> None:
        self.calls: list[tuple[str, tuple, object]] = []
        self.fail = fail or {}
        for name in self.NAMES:
            cls = libvirt.virDomain if hasattr(libvirt.virDomain, name) else libvirt.virConnect
            self._wrap(monkeypatch, cls, name)

    def _wrap(self, monkeypatch, cls, name):
        real = getattr(cls, name)

        def recorded(obj, *args):
            error = self.fail.get((name, args[0] if args else ""))
            if error is not None:
                self.calls.append((name, args, error))
                raise hv_recorded.libvirt_error(*error)
            try:
                reply = real(obj, *args)
            except libvirt.libvirtError as exc:
                self.calls.append((name, args, exc))
                raise
            self.calls.append((name, args, reply))
            return reply

        monkeypatch.setattr(cls, name, recorded)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def reply(self, name: str, *args) -> object:
        return next(r for n, a, r in self.calls if n == name and a == args)


def _listed_with_devices(hv, domains):
    dom = domains.make(devices=DEVICES)
    hv.list_running_domains()
    return dom


def test_one_call_per_device_and_the_sums_of_what_libvirt_said(hv, domains, monkeypatch):
    dom = _listed_with_devices(hv, domains)
    rec = Recording(monkeypatch)
    before = time.monotonic()
    activity = hv.domain_activity(dom.UUIDString())
    # No lookup, no XML, no bulk call: the handle and targets are the listing's.
    assert rec.names() == ["info", "blockStats", "blockStats",
                           "interfaceStats", "interfaceStats"]
    # The cdrom (hdc) is not counted; the driver named the interfaces.
    assert [a for n, a, _ in rec.calls if n == "blockStats"] == [("vda",), ("vdb",)]
    nics = [a[0] for n, a, _ in rec.calls if n == "interfaceStats"]
    assert nics == ["testnet0", "testnet1"]
    assert activity.cpu_ns == rec.reply("info")[4] > 0
    assert activity.block_bytes == sum(
        rec.reply("blockStats", d)[1] + rec.reply("blockStats", d)[3] for d in ("vda", "vdb"))
    assert activity.net_bytes == sum(rec.reply("interfaceStats", n)[4] for n in nics)
    assert activity.block_bytes > 0 and activity.net_bytes > 0
    assert before <= activity.at <= time.monotonic()


def test_a_domain_without_devices_has_cpu_time_only(hv, domains, monkeypatch):
    dom = domains.make()
    hv.list_running_domains()
    rec = Recording(monkeypatch)
    activity = hv.domain_activity(dom.UUIDString())
    assert rec.names() == ["info"]
    assert activity.cpu_ns > 0 and (activity.block_bytes, activity.net_bytes) == (0, 0)


def test_a_device_gone_since_the_listing_is_left_out(hv, domains, monkeypatch):
    """The test driver cannot unplug: the listing is made to remember a
    disk and an interface the domain does not have, and the driver's own
    "invalid argument" errors for them are skipped."""
    real_parse = listing.parse_domain_xml

    def parse(xml):
        facts = real_parse(xml)
        return dataclasses.replace(facts, disks=("vdz",) + facts.disks,
                                   interfaces=facts.interfaces + ("vnet9",))

    monkeypatch.setattr(listing, "parse_domain_xml", parse)
    dom = _listed_with_devices(hv, domains)
    rec = Recording(monkeypatch)
    activity = hv.domain_activity(dom.UUIDString())
    assert [a[0] for n, a, _ in rec.calls if n.endswith("Stats")] == [
        "vdz", "vda", "vdb", "testnet0", "testnet1", "vnet9"]
    failed = [(n, r.get_error_code()) for n, _, r in rec.calls
              if isinstance(r, libvirt.libvirtError)]
    assert failed == [("blockStats", libvirt.VIR_ERR_INVALID_ARG),
                      ("interfaceStats", libvirt.VIR_ERR_INVALID_ARG)]
    assert activity.block_bytes == sum(
        rec.reply("blockStats", d)[1] + rec.reply("blockStats", d)[3] for d in ("vda", "vdb"))


def _kind(hv, uuid) -> ErrorKind:
    with pytest.raises(AgentError) as info:
        hv.domain_activity(uuid)
    assert "\n" not in str(info.value)
    return info.value.kind


def test_gone_or_not_running_is_no_domain(hv, domains):
    assert _kind(hv, str(uuidlib.uuid4())) is ErrorKind.NO_DOMAIN
    assert _kind(hv, domains.make(start=False).UUIDString()) is ErrorKind.NO_DOMAIN
    stopped, undefined = _listed_with_devices(hv, domains), _listed_with_devices(hv, domains)
    hv.list_running_domains()
    stopped.destroy()                  # cached handle: info() says shut off
    undefined.destroy()
    undefined.undefine()               # cached handle: info() says no domain
    assert _kind(hv, stopped.UUIDString()) is ErrorKind.NO_DOMAIN
    assert _kind(hv, undefined.UUIDString()) is ErrorKind.NO_DOMAIN


def test_stopped_between_the_calls_is_no_domain(hv, domains, monkeypatch):
    dom = _listed_with_devices(hv, domains)
    real_info = libvirt.virDomain.info

    def info_then_stop(self):
        reply = real_info(self)
        self.destroy()
        return reply

    monkeypatch.setattr(libvirt.virDomain, "info", info_then_stop)
    rec = Recording(monkeypatch)
    assert _kind(hv, dom.UUIDString()) is ErrorKind.NO_DOMAIN
    # The driver's own answer to the first disk; the rest are not asked.
    assert rec.names() == ["info", "blockStats"]
    assert rec.calls[1][2].get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID


def test_running_but_not_listed_yet_is_no_sample(hv, domains, monkeypatch):
    hv.list_running_domains()
    dom = domains.make(devices=DEVICES)     # started after the listing
    rec = Recording(monkeypatch)
    assert _kind(hv, dom.UUIDString()) is ErrorKind.OTHER
    assert "XMLDesc" not in rec.names()


@pytest.mark.parametrize("failing", [("info", ""), ("blockStats", "vda"),
                                     ("interfaceStats", "testnet1")])
def test_connection_lost_on_any_call_is_unavailable(hv, domains, monkeypatch, failing):
    dom = _listed_with_devices(hv, domains)
    rec = Recording(monkeypatch, fail={failing: hv_recorded.SOCKET_CLOSED})
    with pytest.raises(HypervisorUnavailable, match="client socket is closed"):
        hv.domain_activity(dom.UUIDString())
    assert rec.names()[-1] == failing[0]        # nothing asked after it
    assert not hv.connected                     # the connector replaces it at once


def test_a_busy_domain_fails_the_sample_once(hv, domains, monkeypatch):
    dom = _listed_with_devices(hv, domains)
    rec = Recording(monkeypatch, fail={("blockStats", "vda"): BUSY})
    assert _kind(hv, dom.UUIDString()) is ErrorKind.AGENT_BUSY
    assert rec.names() == ["info", "blockStats"]
