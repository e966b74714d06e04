"""A simulated hypervisor for the scale benchmark (``benchmarks/scale.py``).

It implements :class:`masakarimonitors_iim.hypervisor.interface.HypervisorAPI`
without libvirt, so the real monitor can be driven with thousands of
guests on one small machine. A healthy guest answers every agent command
after ``healthy_latency`` (3 ms: the median measured on the real testbed,
see README.md). A hung one costs what libvirt 9.0 makes it cost, measured
on the testbed (an agent frozen with SIGSTOP): while libvirt is in sync
with the agent (its last call was answered), the call's own timeout in
whole seconds, at least 1; after a timed-out call, libvirt first
re-syncs, bounded by the domain's agent response timeout, whatever the
call's own: 5 s by default, the timeout asked for with
:meth:`SimHypervisor.set_agent_timeout` once the real layer has applied
it, which it does after a timed-out call and undoes when the agent
answers (``hypervisor/timeouts.py``). Then it raises the AGENT_TIMEOUT
error the real hypervisor layer raises for libvirt's error 86. Every
call is counted, per kind and per domain, and the CPU the simulator
itself spends is measured on the calling thread (``time.thread_time``),
so the benchmark can subtract it from the process's CPU and report the
monitor's own cost.

Like libvirtd (``max_client_requests``, 5 by default), it serves at most
``max_client_requests`` calls at once on its one "connection"; more wait
for a slot, and the peak number in flight is recorded.
"""
from __future__ import annotations

import collections
import math
import threading
import time
import uuid as uuid_mod
from typing import Any, Callable

from masakarimonitors_iim.hypervisor import types as hv_types
from masakarimonitors_iim.hypervisor.types import (
    AgentChannel, AgentError, DomainInfo, DomainState, ErrorKind, LifecycleEvent,
    NovaMetadata)

#: Longest a call waits for a free "connection" slot before it fails; a
#: bound, so a wedged benchmark ends instead of hanging.
SLOT_WAIT_MAX = 300.0
#: What the real layer says for a hung agent (libvirt error 86).
HUNG_MESSAGE = "Guest agent is not responding: Guest agent not available for now"


def libvirt_call_seconds(timeout: float) -> float:
    """libvirt takes whole seconds, at least 1 (as the real layer sends)."""
    return float(max(1, math.ceil(timeout)))


def domain_uuid(index: int) -> str:
    """Stable, distinct uuids, so runs are comparable."""
    return str(uuid_mod.uuid5(uuid_mod.NAMESPACE_OID, "iim-bench-%d" % index))


class SimAgent:
    """One domain's agent channel, as probes use it."""

    def __init__(self, hv: SimHypervisor, uuid: str) -> None:
        self._hv = hv
        self.domain_uuid = uuid

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 2.0) -> Any:
        return self._hv.agent_command(self.domain_uuid, name, timeout)


class SimHypervisor:
    """N running domains with an agent channel; ``hang()`` makes some of them
    hang from now on."""

    def __init__(self, n: int, *, healthy_latency: float = 0.003,
                 max_client_requests: int = 5, default_agent_timeout: float = 5.0,
                 call_seconds: Callable[[float], float] | None = None,
                 on_event: Callable[[LifecycleEvent], None] | None = None) -> None:
        self.healthy_latency = healthy_latency
        self.default_agent_timeout = default_agent_timeout
        #: what libvirt makes of a call's timeout (tests pass a faster one)
        self.call_seconds = call_seconds or libvirt_call_seconds
        #: uuid -> agent response timeout set through set_agent_timeout
        self.agent_timeouts: dict[str, float] = {}
        #: domains whose last agent call was answered: libvirt skips the
        #: guest-sync for them
        self.in_sync: set[str] = set()
        #: domains whose last agent call timed out: the real layer has
        #: applied their wanted agent timeout in libvirt
        self.suspect: set[str] = set()
        self.on_event = on_event
        extra: dict[str, Any] = {}
        if "boot_id" in DomainInfo.__dataclass_fields__:
            extra["boot_id"] = "sim-boot"
        self.domains = [
            DomainInfo(uuid=domain_uuid(i), name="instance-%08x" % i,
                       state=DomainState.RUNNING, has_agent=True,
                       nova=NovaMetadata(instance_name="bench-%d" % i,
                                         flavor_name="m1.small",
                                         project_name="bench"), **extra)
            for i in range(n)]
        self.known = {d.uuid for d in self.domains}
        self.hung: set[str] = set()
        self._lock = threading.Lock()
        self._slots = (threading.BoundedSemaphore(max_client_requests)
                       if max_client_requests > 0 else None)
        #: kind -> number of calls ("list", "state", "activity", "agent:guest-ping", ...)
        self.calls: collections.Counter[str] = collections.Counter()
        #: uuid -> number of calls about that domain (all kinds)
        self.per_domain: collections.Counter[str] = collections.Counter()
        self.cpu = 0.0            # simulator CPU seconds, all threads
        self.in_flight = 0
        self.peak_in_flight = 0
        self.slot_wait_max = 0.0  # longest wait for a "connection" slot
        self.is_connected = False

    # -- what the benchmark controls ----------------------------------------
    def hang(self, uuids: set[str]) -> None:
        with self._lock:
            self.hung |= uuids

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters."""
        with self._lock:
            return {"calls": dict(self.calls), "cpu": self.cpu,
                    "peak_in_flight": self.peak_in_flight,
                    "slot_wait_max": self.slot_wait_max}

    # -- bookkeeping ---------------------------------------------------------
    def _count(self, kind: str, uuid: str = "", cpu: float = 0.0) -> None:
        with self._lock:
            self.calls[kind] += 1
            if uuid:
                self.per_domain[uuid] += 1
            self.cpu += cpu

    def _enter(self) -> None:
        waited = time.monotonic()
        if self._slots is not None and not self._slots.acquire(timeout=SLOT_WAIT_MAX):
            raise AgentError(ErrorKind.OTHER, "simulated libvirtd: no call slot in %d s"
                             % SLOT_WAIT_MAX)
        waited = time.monotonic() - waited
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.slot_wait_max = max(self.slot_wait_max, waited)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
        if self._slots is not None:
            self._slots.release()

    def _rpc(self, kind: str, uuid: str, answer: Callable[[], Any]) -> Any:
        """One short call: counted, holding a slot, its CPU measured."""
        cpu = time.thread_time()
        self._enter()
        try:
            return answer()
        finally:
            self._leave()
            self._count(kind, uuid, time.thread_time() - cpu)

    # -- HypervisorAPI ----------------------------------------------------------
    def start(self) -> None:
        self.is_connected = True

    def stop(self, timeout: float = 2.0) -> None:
        self.is_connected = False

    def wait_connected(self, timeout: float) -> bool:
        return self.is_connected

    @property
    def connected(self) -> bool:
        return self.is_connected

    def list_running_domains(self) -> list[DomainInfo]:
        return self._rpc("list", "", lambda: list(self.domains))  # type: ignore[no-any-return,unused-ignore]

    def domain_state(self, uuid: str) -> DomainState:
        return self._rpc("state", uuid, lambda: (  # type: ignore[no-any-return,unused-ignore]
            DomainState.RUNNING if uuid in self.known else DomainState.GONE))

    def domain_activity(self, uuid: str) -> Any:
        """Counters that never move: a hung guest shows no activity."""
        activity = getattr(hv_types, "Activity", None)
        if activity is None:
            raise AgentError(ErrorKind.UNSUPPORTED, "no Activity type in this version")
        return self._rpc("activity", uuid, lambda: activity(
            cpu_ns=1, block_bytes=0, net_bytes=0, at=time.monotonic()))

    def agent_timeout_in_force(self, uuid: str) -> float | None:
        self._count("api:agent_timeout_in_force")
        with self._lock:
            return self.agent_timeouts.get(uuid) if uuid in self.suspect else None

    def _hung_call_seconds(self, uuid: str, timeout: float) -> float:
        """What a call to a hung agent costs in libvirt (module docstring)."""
        with self._lock:
            if uuid in self.in_sync:
                self.in_sync.discard(uuid)
                cost = self.call_seconds(timeout)
            elif uuid in self.suspect and uuid in self.agent_timeouts:
                cost = min(self.agent_timeouts[uuid], self.default_agent_timeout)
            else:
                cost = self.default_agent_timeout
            self.suspect.add(uuid)
            return cost

    def set_agent_timeout(self, uuid: str, timeout: float) -> None:
        """Bookkeeping, not counted as a libvirt call: the real layer
        applies it when it needs to, inside calls counted here."""
        self._count("api:set_agent_timeout")
        with self._lock:
            self.agent_timeouts[uuid] = timeout

    def forget_domain(self, uuid: str) -> None:
        self._count("api:forget_domain")
        with self._lock:
            self.agent_timeouts.pop(uuid, None)

    def agent(self, uuid: str) -> AgentChannel:
        return SimAgent(self, uuid)

    def agent_command(self, uuid: str, name: str, timeout: float) -> Any:
        """guest-info, guest-ping and the rest: healthy answers after the
        healthy latency; hung costs the agent response timeout (see the
        module docstring) and raises AGENT_TIMEOUT."""
        cpu = time.thread_time()
        self._enter()
        try:
            if uuid not in self.known:
                raise AgentError(ErrorKind.NO_DOMAIN, "Domain not found", code=42, domain=10)
            if uuid in self.hung:
                time.sleep(self._hung_call_seconds(uuid, timeout))
                raise AgentError(ErrorKind.AGENT_TIMEOUT, HUNG_MESSAGE, code=86, domain=10)
            time.sleep(self.healthy_latency)
            with self._lock:
                self.in_sync.add(uuid)
                self.suspect.discard(uuid)
            if name == "guest-info":
                return {"version": "7.2", "supported_commands": [
                    {"name": "guest-ping", "enabled": True, "success-response": True}]}
            return {}
        finally:
            self._leave()
            self._count("agent:" + name, uuid, time.thread_time() - cpu)
