"""Is libvirtd stalled? How the monitor tells a hung libvirtd from a slow call.

libvirt RPCs other than agent commands have no timeout of their own, so
a hung libvirtd would hold every call forever; libvirt's keepalive is
the usual cure, but the monitor turns it off (``setKeepAlive(-1, 0)``).
Why: when keepalive declares a connection dead while two or more calls
wait on it, the libvirt 9.0 client wakes one of them; the others stay in
the closed client's I/O loop until data arrives on a file descriptor
number that by then belongs to another socket, and the process dies with
SIGSEGV (reproduced with two threads making any two calls while libvirtd
is SIGSTOPped, keepalive 1 s x 3, then SIGCONT). With keepalive off,
calls on a hung libvirtd simply wait and complete once it continues.

So a connection counts as stalled when a call has waited
``keepalive_interval * (keepalive_count + 1)`` seconds and nothing was
answered on it for as long (:class:`~.ledger.CallLedger` measures the
wait). Past half that limit one cheap call checks that libvirtd still
answers: its answer restarts the wait, so a single long agent call on a
quiet host is not a stall. A stalled connection is replaced, and closed
only once its calls return (:mod:`.replaced`).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

import libvirt

from masakarimonitors_iim.hypervisor.types import HypervisorUnavailable


def decide(waited: float, limit: float, probing: bool) -> tuple[str | None, bool]:
    """Why the connection counts as lost (None: it does not), and whether
    to start the probe: past half the limit, unless one already runs on
    this connection (one probe per connection is enough to restart the
    wait, and more would pile up on a hung libvirtd)."""
    if waited >= limit:
        return "libvirtd answered no call for %.0f s" % waited, False
    return None, waited >= limit / 2 and not probing


class StallWatch:
    """The connector's stall check and its probe.

    ``hold`` is :meth:`~.connection.Connection.hold`: the probe is an
    ordinary call, so its answer counts in the ledger like any other.
    Thread-safe: the connector checks, the probe thread says it returned.
    """

    def __init__(self, keepalive_interval: int, keepalive_count: int,
                 hold: Callable[[], contextlib.AbstractContextManager[libvirt.virConnect]]
                 ) -> None:
        self.limit = keepalive_interval * (keepalive_count + 1)
        self._hold = hold
        self._lock = threading.Lock()
        self._probing: libvirt.virConnect | None = None   # the one probe's connection

    def check(self, conn: libvirt.virConnect, waited: float) -> str | None:
        """Why ``conn``, whose oldest call has waited ``waited`` seconds
        without an answer, counts as lost; None while it does not."""
        with self._lock:
            # Per connection: a probe stuck on a replaced connection must
            # not keep the new one from being checked.
            lost, probe = decide(waited, self.limit, self._probing is conn)
            if probe:
                self._probing = conn
        if probe:
            threading.Thread(target=self._probe, args=(conn,), name="libvirt-probe",
                             daemon=True).start()
        return lost

    def _probe(self, conn: libvirt.virConnect) -> None:
        try:
            with self._hold() as held:
                if held is conn:
                    held.getLibVersion()
        except (libvirt.libvirtError, HypervisorUnavailable):
            pass   # a dead or replaced connection is found by other means
        finally:
            with self._lock:
                if self._probing is conn:
                    self._probing = None
