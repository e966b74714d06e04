"""Filesystems frozen in the guest (fsfreeze): why every probe is UNKNOWN.

While a snapshot or backup tool holds the guest's filesystems frozen
(Nova's quiesced snapshots do, through guest-fsfreeze-freeze), qemu-ga
disables every RPC except a handful (guest-ping, guest-info, guest-sync,
guest-fsfreeze-status, guest-fsfreeze-thaw). The application probes then
meet "command disabled", and guest-info read at that moment lists them as
disabled: exactly what a guest administrator's ``--block-rpcs`` looks
like. Taking that for a policy block would switch the probes off for
good, and telling the operator to fix qemu-ga would be wrong; a guest
whose application cannot be asked says nothing about its health, so the
round is UNKNOWN for every probe, for as long as the freeze lasts.

Cost: nothing extra on a healthy domain. guest-fsfreeze-status is asked
only when something was refused in the round (a probe's RPC disabled, or
guest-info listing a probe's RPC as disabled), which on a guest without
a freeze happens once, at discovery, when its qemu-ga really blocks an
RPC (then the block is cached and the probe not run again).
"""
from __future__ import annotations

import time
from typing import Any

from masakarimonitors_iim.hypervisor.types import AgentChannel, AgentError
from masakarimonitors_iim.probes import capabilities

#: A freeze longer than this is shown as "never thawed" in status. Nova's
#: quiesced snapshot holds the freeze for the seconds a disk snapshot
#: takes; ten minutes means the tool that froze the guest died or forgot
#: it. It changes only the words shown, never a verdict (the guest stays
#: UNKNOWN: restarting a VM because a backup tool crashed would lose the
#: data the snapshot was taken for), so it is a constant, not a setting.
NEVER_THAWED_AFTER = 600.0


class RefusalWatch:
    """An agent channel that remembers whether the guest refused a call
    as disabled or unknown, the sign that filesystems may be frozen.

    Probes turn a refusal into UNKNOWN themselves, so the prober could
    not otherwise tell it from any other UNKNOWN.
    """

    def __init__(self, agent: AgentChannel) -> None:
        self._agent = agent
        self.domain_uuid = agent.domain_uuid
        self.refused = False

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 2.0) -> Any:
        try:
            return self._agent.command(name, arguments, timeout)
        except AgentError as err:
            if capabilities.is_blocked_error(err):
                self.refused = True
            raise


def is_frozen(agent: AgentChannel, timeout: float) -> bool:
    """True only when the guest says its filesystems are frozen.

    Any failure (the RPC blocked too, the agent gone) is not evidence of
    a freeze: the probes' own results then stand as they are.
    """
    try:
        state = agent.command("guest-fsfreeze-status", None, timeout)
    except AgentError:
        return False
    return state == "frozen"


def frozen_reason(since: float, now: float) -> str:
    """One line for status; ``since`` is the wall time the freeze was
    first seen (0: seen in this round).

    The text changes once per freeze (frozen, then never thawed), never
    with each round: the journal stores a verdict's reason only when it
    changes, and a guest frozen for days must not cost a synced write
    every interval.
    """
    since = since or now
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    if now - since > NEVER_THAWED_AFTER:
        return ("guest filesystems frozen (fsfreeze) since %s, more than %d s, never "
                "thawed: the snapshot or backup tool that froze them left them so; thaw "
                "them (guest-fsfreeze-thaw); guest health unknown until then"
                % (when, NEVER_THAWED_AFTER))
    return ("guest filesystems are frozen (fsfreeze) since %s: probes cannot run "
            "until they are thawed, guest health unknown" % when)
