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
    """A domain as the inventory sees it at one moment.

    ``boot_id`` names one run of the domain's QEMU process (host boot,
    libvirt domain id): when it changes, the guest was restarted, even if
    the monitor was not running to see the STARTED event. A reboot inside
    the guest keeps the QEMU process and so the boot id; the REBOOTED
    event covers that while the monitor runs. "" when unknown.
    """

    uuid: str
    name: str
    state: DomainState
    has_agent: bool
    nova: NovaMetadata | None = None
    boot_id: str = ""


@dataclasses.dataclass(frozen=True)
class Activity:
    """Cumulative counters of one domain at one moment: two samples over
    a failure window tell whether a guest whose agent is silent is still
    doing work. ``at`` is ``time.monotonic()`` when sampled; the byte
    counts sum reads and writes over all disks (CD-ROMs aside), and the
    bytes the guest transmitted (tx, libvirt counts from the guest's
    side) over all interfaces: received traffic reaches a dead guest
    too. "All" is at most 64 of each (see hypervisor.inventory)."""

    cpu_ns: int
    block_bytes: int
    net_bytes: int
    at: float


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
