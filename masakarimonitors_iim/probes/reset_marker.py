"""reset_marker: the application itself asks for its VM to be recovered.

The application writes a token (any short text: a UUID, a timestamp, a
counter) into a marker file the operator names. The request is
edge-triggered on the token: each *new* token asks for exactly one
recovery; the same token read again asks for nothing.

Why a changing token rather than "the file exists": a marker on a
persistent disk survives the restart it asked for, and would otherwise
ask again after every boot, forever. With tokens, the first content seen
by a probe (at monitor start, or for a new or restarted domain) is only a
baseline and never triggers; only a change seen while watching does. The
cost is that a request written before the probe's first read is taken as
the baseline: an application that still wants recovery simply writes a
new token. A missing or empty file is the normal state, "no request".

The request shows as FAILED with ``reset_requested`` set, so the journal
reports it at once instead of waiting for the failure threshold.
"""
from __future__ import annotations

from typing import Any, Mapping

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor.types import AgentChannel
from masakarimonitors_iim.probes import _params, capabilities
from masakarimonitors_iim.probes.base import Deadline, Probe
from masakarimonitors_iim.probes.guestfile import (
    FileBlocked,
    FileMissing,
    GuestFileError,
    GuestFileReader,
)
from masakarimonitors_iim.verdict import ProbeResult, Verdict

NAME = "reset_marker"
KNOWN = {"path", "max_bytes"}

_NOT_READ = object()


class ResetMarkerProbe(Probe):
    name = NAME

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        _params.reject_unknown(NAME, self.params, KNOWN)
        self.path = _params.guest_path(NAME, self.params, "path",
                                       "/var/lib/myapp/request-reset")
        self.max_bytes = _params.integer(NAME, self.params, "max_bytes", 128, 1, 4096)
        self._reader = GuestFileReader()
        # The last token seen: bytes, None (no request), or _NOT_READ
        # before the first successful look (then the next one is baseline).
        self._token: object = _NOT_READ

    def required_commands(self) -> set[str]:
        return set(GuestFileReader.REQUIRED_COMMANDS)

    def run(self, agent: AgentChannel, timeout: float) -> ProbeResult:
        deadline = Deadline(timeout, self._clock)
        try:
            token: bytes | None = self._reader.read(agent, self.path, self.max_bytes,
                                                    deadline).strip() or None
        except FileBlocked as blocked:
            return ProbeResult.unknown(
                capabilities.runtime_blocked_reason(NAME, blocked.command, blocked.err))
        except FileMissing:
            token = None
        except GuestFileError as err:
            # Keep the previous token: an unreadable round is not a change.
            return ProbeResult.unknown("cannot read reset marker %s: %s" % (self.path, err))
        previous, self._token = self._token, token
        if previous is _NOT_READ or token is None or token == previous:
            return ProbeResult.healthy()
        return ProbeResult(Verdict.FAILED,
                           "application requested a reset through %s (token %r)"
                           % (self.path, one_line(token, 60)),
                           reset_requested=True)

    def close(self, agent: AgentChannel | None) -> None:
        self._reader.close_stale(agent)
