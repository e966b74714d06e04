"""A domain's counters from libvirt's per-domain calls, in the monitor's
terms; pure.

A sample is ``virDomainGetInfo`` (CPU time), then ``virDomainBlockStats``
for each disk and ``virDomainInterfaceStats`` for each interface, with the
targets from the XML the inventory cached. Not the bulk statistics call
(``virDomainListGetStats``, ``virConnectGetAllDomainStats``): it crashed
the process (SIGSEGV inside the libvirt 9.0 client) when keepalive closed
a hung libvirtd's connection under it, and a sample is taken exactly when
libvirtd may hang (the agent is silent); these calls fail cleanly there.

The values come from the hypervisor, so none is trusted blindly: one of
the wrong type, or negative (libvirt's -1: "not kept by this driver"),
counts as 0.
"""
from __future__ import annotations

from typing import Any, Sequence

from masakarimonitors_iim.hypervisor import errors
from masakarimonitors_iim.hypervisor.types import ErrorKind

#: virDomainGetInfo: (state, max memory, memory, vCPUs, CPU time in ns).
INFO_STATE, INFO_CPU_NS = 0, 4
VIR_DOMAIN_SHUTOFF = 5
#: virDomainBlockStats: (rd_req, rd_bytes, wr_req, wr_bytes, errs).
BLOCK_BYTES = (1, 3)
#: virDomainInterfaceStats: (rx_bytes, rx_packets, rx_errs, rx_drop,
#: tx_bytes, ...), counted from the guest's side: only what the guest
#: sent, since bytes it receives (ARP, broadcasts, a client retrying)
#: arrive at a dead guest too.
SENT_BYTES = (4,)


def counter(value: Any) -> int:
    # bool is an int to Python, but never a counter.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def total(reply: Sequence[Any], fields: tuple[int, ...]) -> int:
    """The sum of ``fields`` of one stats reply; a field the reply lacks
    counts as 0."""
    return sum(counter(reply[i]) for i in fields if i < len(reply))


def cpu_ns(info: Sequence[Any]) -> int | None:
    """CPU time from ``virDomainGetInfo``, or None when the domain is
    shut off (it answers with 0 then: nothing to compare)."""
    if len(info) <= INFO_CPU_NS or info[INFO_STATE] == VIR_DOMAIN_SHUTOFF:
        return None
    return counter(info[INFO_CPU_NS])


def sample_error(kind: ErrorKind) -> ErrorKind:
    """The kind a failed sample reports: a domain that stopped is as good
    as gone, there are no counters to compare."""
    return ErrorKind.NO_DOMAIN if kind is ErrorKind.DOMAIN_NOT_RUNNING else kind


def device_error(kind: ErrorKind, code: int) -> ErrorKind | None:
    """What one disk's or interface's failed call means for the sample:
    None to skip the device, else the kind the whole sample fails with.

    Skipped: the device is not there ("invalid argument": hot-unplugged
    since the listing read the XML) or the driver keeps no such counters.
    Anything else fails the sample rather than leaving a device out: a
    device missing from one sample and back in the next would look like
    the guest did I/O. And a call that waited out a busy QEMU job must not
    be repeated for every other device.
    """
    if kind is ErrorKind.CONNECTION_LOST:
        return kind
    if code == errors.VIR_ERR_INVALID_ARG or kind is ErrorKind.UNSUPPORTED:
        return None
    return sample_error(kind)
