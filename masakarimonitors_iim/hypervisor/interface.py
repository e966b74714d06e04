"""The hypervisor as the rest of the monitor sees it.

A typed :class:`Protocol`: the libvirt implementation
(:class:`masakarimonitors_iim.hypervisor.calls.Hypervisor`) and the test
fake both satisfy it, and the type checker run by ``make test`` keeps
them from drifting apart. Nothing here imports libvirt.
"""
from __future__ import annotations

from typing import Protocol

from masakarimonitors_iim.hypervisor.types import (
    Activity, AgentChannel, DomainInfo, DomainState)


class HypervisorAPI(Protocol):
    """What the monitor asks of libvirt.

    It reports what happened (facts, :class:`AgentError` kinds); it never
    decides whether a guest is healthy. It owns libvirt's bookkeeping:
    the agent response timeout asked for with :meth:`set_agent_timeout`
    is applied only while the domain's agent is suspect (a command timed
    out) and libvirt's default restored when it answers, because the
    setting is domain-wide and Nova's agent calls would get it too; it is
    set again after the domain or libvirtd restarts, so nothing above it
    needs to know.
    """

    def start(self) -> None:
        """Connect in the background; returns at once."""

    def stop(self, timeout: float = 2.0) -> None:
        """Close within ``timeout`` seconds; idempotent."""

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; False if none."""

    @property
    def connected(self) -> bool:
        """True while a connection is open and not known to be dead (for
        metrics and start-up; calls still fail fast when it is not)."""

    def list_running_domains(self) -> list[DomainInfo]:
        """Active domains; raises HypervisorUnavailable when libvirt is not reachable."""

    def domain_state(self, uuid: str) -> DomainState:
        """The state now (GONE if unknown); raises HypervisorUnavailable."""

    def domain_activity(self, uuid: str) -> Activity:
        """The domain's CPU, block and network counters now, for the disks
        and interfaces the last listing found; raises HypervisorUnavailable,
        AgentError(NO_DOMAIN) when the domain is gone or not running, or
        another AgentError when no comparable sample can be taken (not
        listed yet, a device call failed): no sample beats a partial one,
        which the next could make look like I/O."""

    def agent_timeout_in_force(self, uuid: str) -> float | None:
        """The agent response timeout this monitor has set on the domain
        in libvirt, or None while the domain keeps libvirt's default."""

    def set_agent_timeout(self, uuid: str, timeout: float) -> None:
        """Use ``timeout`` seconds as the domain's agent response timeout
        while its agent is suspect (see the class docstring). Cheap (no
        RPC); never raises; failures are logged by the implementation."""

    def forget_domain(self, uuid: str) -> None:
        """Drop everything kept for a domain no longer monitored (stopped,
        undefined, unwatched): libvirt's default agent timeout is restored
        if the monitor had shortened it, and it is no longer re-applied."""

    def agent(self, uuid: str) -> AgentChannel:
        """The agent transport of one domain, as probes use it."""
