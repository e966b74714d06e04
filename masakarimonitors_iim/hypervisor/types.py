"""Plain data the hypervisor layer hands upward.

These types carry no libvirt objects, so the rest of the monitor can use
them (and tests can build them) without importing libvirt.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Protocol


class DomainState(str, enum.Enum):
    """libvirt's virDomainState, plus MIGRATING which libvirt reports as
    RUNNING/PAUSED with a migration reason: we keep it apart because a
    migrating guest's agent may legitimately stall."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutting-down"
    SHUTOFF = "shut-off"
    CRASHED = "crashed"
    PMSUSPENDED = "pm-suspended"
    MIGRATING = "migrating"
    GONE = "gone"


class EventKind(str, enum.Enum):
    """Lifecycle events the monitor acts on."""

    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    PMSUSPENDED = "pm-suspended"
    CRASHED = "crashed"
    REBOOTED = "rebooted"
    AGENT_CONNECTED = "agent-connected"
    AGENT_DISCONNECTED = "agent-disconnected"
    CONNECTION_LOST = "connection-lost"
    CONNECTION_RESTORED = "connection-restored"


@dataclasses.dataclass(frozen=True)
class LifecycleEvent:
    """One event from libvirt, already translated; ``uuid`` is empty for
    connection-level events."""

    kind: EventKind
    uuid: str = ""
    name: str = ""
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class NovaMetadata:
    """What Nova wrote into the domain XML about the instance.

    Policy rules match on these fields. ``image_properties`` and
    ``flavor_extra_specs`` are empty unless the XML carries them.
    """

    instance_name: str = ""
    flavor_name: str = ""
    image_uuid: str = ""
    project_uuid: str = ""
    project_name: str = ""
    user_uuid: str = ""
    user_name: str = ""
    flavor_extra_specs: dict[str, str] = dataclasses.field(default_factory=dict)
    image_properties: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DomainInfo:
    """A domain as the inventory sees it at one moment."""

    uuid: str
    name: str
    state: DomainState
    has_agent: bool
    nova: NovaMetadata | None = None


class ErrorKind(str, enum.Enum):
    """Why an agent call failed, in terms that decide the verdict."""

    AGENT_TIMEOUT = "agent-timeout"            # 86 "not available for now": agent or guest hung
    AGENT_NOT_CONNECTED = "agent-not-connected"  # 86 "not connected": agent absent or booting
    DOMAIN_NOT_RUNNING = "domain-not-running"  # 55: paused, shut off
    NO_DOMAIN = "no-domain"                    # 42: gone
    COMMAND_DISABLED = "command-disabled"      # RPC blocked by qemu-ga policy
    COMMAND_NOT_FOUND = "command-not-found"
    COMMAND_FAILED = "command-failed"          # the agent answered with an error
    BAD_REPLY = "bad-reply"                    # unparsable or oversized reply
    CONNECTION_LOST = "connection-lost"        # libvirtd unreachable
    UNSUPPORTED = "unsupported"                # driver cannot talk to agents
    AGENT_BUSY = "agent-busy"                  # libvirt job lock held, or too many calls in flight
    REPLY_TOO_LARGE = "reply-too-large"        # libvirt could not carry the reply
    OTHER = "other"


class AgentError(Exception):
    """A failed agent call, classified. ``str()`` is one readable line."""

    def __init__(self, kind: ErrorKind, message: str, code: int = 0, domain: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.domain = domain

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


class HypervisorUnavailable(Exception):
    """libvirtd cannot be reached right now; callers treat it as UNKNOWN."""


class AgentChannel(Protocol):
    """An agent transport bound to one domain: what a probe is given.

    ``command`` sends one guest-agent command and returns the reply's
    ``return`` member; it raises :class:`AgentError` on any failure and
    never blocks longer than ``timeout`` seconds (plus a small margin).
    """

    domain_uuid: str

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 2.0) -> Any:
        ...
