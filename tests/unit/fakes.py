"""A hypervisor fake for tests of the monitor, typed against the real
interface: ``make test`` type-checks this file, so the fake cannot drift
from :class:`masakarimonitors_iim.hypervisor.interface.HypervisorAPI`."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import (
    Activity, AgentChannel, AgentError, DomainInfo, DomainState, ErrorKind,
    HypervisorUnavailable)

#: What a fake guest does on an agent call: "ok", an ErrorKind to raise,
#: or a callable whose return value is the reply.
Behaviour = Any


class FakeAgent:
    def __init__(self, hv: FakeHypervisor, uuid: str) -> None:
        self.hv = hv
        self.domain_uuid = uuid

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 2.0) -> Any:
        self.hv.calls.append((self.domain_uuid, name))
        self.hv.call_timeouts.append((self.domain_uuid, name, timeout))
        if not self.hv.up:
            raise AgentError(ErrorKind.CONNECTION_LOST, "client socket is closed")
        behaviour = self.hv.behaviour.get(self.domain_uuid, "ok")
        if name == "guest-info":
            return {"version": "7.2", "supported_commands": [
                {"name": "guest-ping", "enabled": True, "success-response": True}]}
        if callable(behaviour):
            reply = behaviour()
            self.hv.agent_answered(self.domain_uuid)
            return reply
        if behaviour == "ok":
            self.hv.agent_answered(self.domain_uuid)
            return {}
        if behaviour is ErrorKind.AGENT_TIMEOUT:
            self.hv.agent_timed_out(self.domain_uuid)
        raise AgentError(behaviour, "fake %s" % behaviour.value, code=86, domain=10)


class FakeHypervisor:
    """Stands in for hypervisor.calls.Hypervisor (the libvirt edge)."""

    def __init__(self) -> None:
        self.domains: dict[str, DomainInfo] = {}
        self.states: dict[str, DomainState] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.calls: list[tuple[str, str]] = []
        #: (uuid, command, timeout) for every agent call
        self.call_timeouts: list[tuple[str, str, float]] = []
        #: (uuid, timeout) for every set_agent_timeout call
        self.prepared: list[tuple[str, float]] = []
        #: the agent timeout each domain wants (set_agent_timeout), and the
        #: one in force: like the real one, applied only while an agent
        #: call times out, dropped when the agent answers or is forgotten
        self.wanted_timeout: dict[str, float] = {}
        self.timeout_in_force: dict[str, float] = {}
        #: what domain_activity returns; a domain without an entry reads
        #: as all zero counters sampled now
        self.activity: dict[str, Activity] = {}
        #: uuid of every domain_activity call
        self.activity_calls: list[str] = []
        self.forgotten: list[str] = []
        self.up = True
        self.list_running_domains: Callable[[], list[DomainInfo]] = self._running

    def add(self, uuid: str, name: str, has_agent: bool = True, boot_id: str = "") -> None:
        self.domains[uuid] = DomainInfo(uuid=uuid, name=name, state=DomainState.RUNNING,
                                        has_agent=has_agent, boot_id=boot_id)
        self.states[uuid] = DomainState.RUNNING

    def set_boot_id(self, uuid: str, boot_id: str) -> None:
        """Simulate a restart of the domain's QEMU process (seen or not)."""
        self.domains[uuid] = dataclasses.replace(self.domains[uuid], boot_id=boot_id)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 2.0) -> None:
        pass

    def wait_connected(self, timeout: float) -> bool:
        return self.up

    @property
    def connected(self) -> bool:
        return self.up

    def _running(self) -> list[DomainInfo]:
        if not self.up:
            raise HypervisorUnavailable("libvirtd is down")
        return [d for u, d in self.domains.items() if self.states[u] is DomainState.RUNNING]

    def domain_state(self, uuid: str) -> DomainState:
        if not self.up:
            raise HypervisorUnavailable("libvirtd is down")
        return self.states.get(uuid, DomainState.GONE)

    def domain_activity(self, uuid: str) -> Activity:
        self.activity_calls.append(uuid)
        if not self.up:
            raise HypervisorUnavailable("libvirtd is down")
        if uuid not in self.domains:
            raise AgentError(ErrorKind.NO_DOMAIN, "fake: no domain %s" % uuid, code=42)
        return self.activity.get(uuid) or Activity(0, 0, 0, time.monotonic())

    def agent_timeout_in_force(self, uuid: str) -> float | None:
        return self.timeout_in_force.get(uuid)

    def set_agent_timeout(self, uuid: str, timeout: float) -> None:
        self.prepared.append((uuid, timeout))
        self.wanted_timeout[uuid] = timeout

    def agent_timed_out(self, uuid: str) -> None:
        if uuid in self.wanted_timeout:
            self.timeout_in_force[uuid] = self.wanted_timeout[uuid]

    def agent_answered(self, uuid: str) -> None:
        self.timeout_in_force.pop(uuid, None)

    def forget_domain(self, uuid: str) -> None:
        self.forgotten.append(uuid)
        self.wanted_timeout.pop(uuid, None)
        self.timeout_in_force.pop(uuid, None)

    def agent(self, uuid: str) -> AgentChannel:
        return FakeAgent(self, uuid)


class InlinePool:
    """A worker pool that runs each job at once, on the caller's thread."""

    def start(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        pass

    def submit(self, job: Callable[[], None], cleanup: bool = False) -> None:
        job()


def _conforms(fake: FakeHypervisor) -> HypervisorAPI:
    """Never called: the type checker proves the fake satisfies the interface."""
    return fake
