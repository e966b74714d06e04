"""The domain listing, on a thread of its own, and when to make it.

Listing is a libvirt call (plus an XML read for each new or changed
domain): on a host with thousands of guests, at start-up or while
libvirtd is slow, it takes long enough to make due probes late if the
scheduler thread made it. So the scheduler only asks for a listing; this
thread makes it and hands the answer back through ``deliver`` (the
scheduler's queue, like a libvirt event). Until :meth:`Lister.start`
(unit tests that drive ``Monitor.step`` by hand), a request is served on
the caller's thread.
"""
from __future__ import annotations

import threading
from typing import Callable, Union

from oslo_log import log as logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import DomainInfo, HypervisorUnavailable

LOG = logging.getLogger(__name__)

#: While libvirt is unreachable, list again this often (seconds).
INVENTORY_RETRY = 1.0

#: What a listing gives: the running domains, or why libvirt could not tell.
Listing = Union[list[DomainInfo], HypervisorUnavailable]


def list_domains(hypervisor: HypervisorAPI) -> Listing:
    """One listing; never raises HypervisorUnavailable, returns it."""
    try:
        return hypervisor.list_running_domains()
    except HypervisorUnavailable as exc:
        return exc


class Lister:
    def __init__(self, hypervisor: HypervisorAPI,
                 deliver: Callable[[Listing], None]) -> None:
        self._hv = hypervisor
        self._deliver = deliver
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trouble = LogOnce(LOG)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inventory", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """A listing stuck in a hung libvirtd cannot be interrupted: the
        daemon thread is left behind after ``timeout``."""
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))

    def request(self) -> Listing | None:
        """List once more. With the thread running, the answer comes
        through ``deliver`` and this returns None; before :meth:`start`,
        the listing is made here and returned."""
        if self._thread is None:
            return list_domains(self._hv)
        self._wanted.set()
        return None

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop.is_set():
                return
            try:
                listing = list_domains(self._hv)
                self._trouble.resolved()
            except Exception as exc:   # a bug: said once, and the scheduler asks again
                self._trouble.problem("listing domains failed unexpectedly: %s", exc,
                                      level=logging.ERROR, exc_info=True)
                listing = HypervisorUnavailable("listing failed: %s" % exc)
            if self._stop.is_set():
                return
            self._deliver(listing)


class Inventory:
    """When to list, and what a listing changes: the scheduler thread's
    half (the :class:`Lister` makes the call).

    ``sync(domains, first)`` hands a listing to the registry; ``first``
    is True for the first listing that worked (its domains are spread).
    """

    def __init__(self, hypervisor: HypervisorAPI, *, interval: float,
                 clock: Callable[[], float],
                 post: Callable[[Callable[[], None]], None],
                 sync: Callable[[list[DomainInfo], bool], None]) -> None:
        self._interval = interval
        self._clock = clock
        self._sync = sync
        self.lister = Lister(hypervisor, lambda listing: post(lambda: self.listed(listing)))
        self.listing = False        # a listing was asked for, not yet applied
        self.due = 0.0
        self._relist = False        # an event asked for another one meanwhile
        self._stopped: set[str] = set()   # domains that stopped meanwhile
        self._listed_once = False
        self._trouble = LogOnce(LOG)

    def want(self) -> None:
        """List again at once (an event, a reload), or right after the
        listing under way."""
        self._relist = True
        self.due = 0.0

    def stopped(self, uuid: str) -> None:
        """The domain stopped or was undefined: a listing under way, read
        before, must not bring it back."""
        if self.listing:
            self._stopped.add(uuid)

    def wake_at(self) -> float | None:
        return None if self.listing else self.due

    def request_if_due(self, now: float) -> None:
        if self.listing or now < self.due:
            return
        self.listing = True
        self._relist = False
        listing = self.lister.request()
        if listing is not None:      # no lister thread (tests): listed here
            self.listed(listing)

    def listed(self, listing: Listing) -> None:
        """Hand a listing to the registry (on the scheduler thread)."""
        self.listing = False
        stopped, self._stopped = self._stopped, set()
        now = self._clock()
        # While libvirt is unreachable (or the journal write in sync
        # fails), look again every second, so a (re)connection is
        # followed by an inventory at once.
        self.due = now + INVENTORY_RETRY
        if isinstance(listing, HypervisorUnavailable):
            # One line per outage: its wording changes as the connection
            # goes from hung to dropped to reconnecting.
            if not self._trouble.active():
                self._trouble.problem(
                    "cannot list domains: %s; verdicts are UNKNOWN until libvirt is back",
                    str(listing) or "libvirt is unreachable")
            return
        self._trouble.resolved("listing domains works again")
        # A domain that stopped while the list was read is not running,
        # whatever the (older) list says.
        self._sync([d for d in listing if d.uuid not in stopped], not self._listed_once)
        self._listed_once = True
        self.due = 0.0 if self._relist else now + self._interval
