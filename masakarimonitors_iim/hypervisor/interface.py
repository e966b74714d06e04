"""The hypervisor as the rest of the monitor sees it.

A typed :class:`Protocol`: the libvirt implementation
(:class:`masakarimonitors_iim.hypervisor.calls.Hypervisor`) and the test
fake both satisfy it, and the type checker run by ``make test`` keeps
them from drifting apart. Nothing here imports libvirt.
"""
from __future__ import annotations

from typing import Protocol

from masakarimonitors_iim.hypervisor.types import AgentChannel, DomainInfo, DomainState


class HypervisorAPI(Protocol):
    """What the monitor asks of libvirt.

    It reports what happened (facts, :class:`AgentError` kinds); it never
    decides whether a guest is healthy. It owns libvirt's bookkeeping:
    libvirtd forgets a domain's agent response timeout when the domain
    restarts or libvirtd reconnects, and the implementation re-applies
    what :meth:`set_agent_timeout` asked for, so nothing above it needs to
    know.
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

    def set_agent_timeout(self, uuid: str, timeout: float) -> None:
        """Keep the domain's agent response timeout at ``timeout`` seconds,
        now and after every restart of the domain or of libvirtd. Never
        raises; failures are logged by the implementation."""

    def forget_domain(self, uuid: str) -> None:
        """Drop everything kept for a domain no longer monitored (stopped,
        undefined, unwatched): its agent timeout is no longer re-applied."""

    def agent(self, uuid: str) -> AgentChannel:
        """The agent transport of one domain, as probes use it."""
