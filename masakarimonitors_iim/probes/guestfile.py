"""Reading one small guest file through guest-file-open/read/close.

Shared by the heartbeat and reset-marker probes. Its one promise beyond
reading is that no handle is left open in the guest: qemu-ga keeps every
handle (and its file descriptor) until guest-file-close, so a probe that
leaked one per round would exhaust the agent's descriptors within hours.
"""
from __future__ import annotations

import base64
import binascii
import logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.hypervisor.types import AgentChannel, AgentError, ErrorKind
from masakarimonitors_iim.probes import capabilities
from masakarimonitors_iim.probes.base import CLEANUP_CALL_TIMEOUT, Deadline

LOG = logging.getLogger(__name__)

#: Handles whose close failed (agent hung) and are retried later; capped
#: so a guest that never answers cannot grow our memory either.
MAX_STALE_HANDLES = 16

#: Reads per file: a regular file comes back in one read; a few more
#: cover a short read without letting a guest keep us looping.
MAX_READS = 4

#: Close failures after which the handle is still open in the guest (the
#: agent never saw the close); any other error means it is gone.
_STILL_OPEN_KINDS = (ErrorKind.AGENT_TIMEOUT, ErrorKind.AGENT_BUSY, ErrorKind.CONNECTION_LOST)

#: How qemu-ga says "no such file" (strerror on POSIX, Windows wording).
_MISSING_WORDS = ("no such file or directory", "cannot find the file",
                  "cannot find the path")


class GuestFileError(Exception):
    """The file could not be read; ``str()`` is sanitised and one line."""


class FileMissing(GuestFileError):
    """The guest says the file does not exist."""


class FileBlocked(GuestFileError):
    """An RPC we need is disabled or unknown in the guest agent."""

    def __init__(self, command: str, err: AgentError) -> None:
        super().__init__("%s blocked" % command)
        self.command = command
        self.err = err


class GuestFileReader:
    """Reads small files for one probe, and owns the handle clean-up."""

    REQUIRED_COMMANDS = frozenset({"guest-file-open", "guest-file-read", "guest-file-close"})

    def __init__(self) -> None:
        self._stale_handles: list[int] = []
        self._close_trouble = LogOnce(LOG)

    def read(self, agent: AgentChannel, path: str, max_bytes: int,
             deadline: Deadline) -> bytes:
        """Return the file's content, at most ``max_bytes`` long.

        Raises :class:`FileMissing`, :class:`FileBlocked`,
        :class:`GuestFileError` (too large, unreadable, malformed reply)
        or an unhandled :class:`AgentError` (agent hung, domain gone),
        which the caller maps with the domain state.
        """
        if self._stale_handles:
            self.close_stale(agent, min(CLEANUP_CALL_TIMEOUT, deadline.call_timeout()))
        handle = self._open(agent, path, deadline)
        try:
            data = self._read_all(agent, handle, max_bytes, deadline)
        finally:
            self._close(agent, handle, deadline)
        return data

    def close_stale(self, agent: AgentChannel | None,
                    timeout: float = CLEANUP_CALL_TIMEOUT) -> None:
        """Retry closing handles an earlier close could not; best effort.

        Stops at the first timeout: the agent is still hung, and waiting
        once per handle would blow the round's budget.
        """
        if agent is None:
            self._stale_handles.clear()
            return
        while self._stale_handles:
            handle = self._stale_handles[0]
            try:
                agent.command("guest-file-close", {"handle": handle}, timeout)
            except AgentError as err:
                if err.kind in _STILL_OPEN_KINDS:
                    return
                # Anything else (bad handle, agent restarted, domain gone):
                # the handle no longer exists in the guest.
            self._stale_handles.pop(0)

    def _open(self, agent: AgentChannel, path: str, deadline: Deadline) -> int:
        try:
            handle = agent.command("guest-file-open", {"path": path, "mode": "r"},
                                   deadline.call_timeout())
        except AgentError as err:
            if capabilities.is_blocked_error(err):
                raise FileBlocked("guest-file-open", err) from None
            if err.kind is ErrorKind.COMMAND_FAILED:
                text = err.message.lower()
                if any(w in text for w in _MISSING_WORDS):
                    raise FileMissing("%s does not exist" % one_line(path)) from None
                raise GuestFileError("cannot open %s: %s"
                                     % (one_line(path), one_line(err.message))) from None
            raise
        if isinstance(handle, bool) or not isinstance(handle, int):
            raise GuestFileError("malformed guest-file-open reply %s" % one_line(repr(handle)))
        return handle

    def _read_all(self, agent: AgentChannel, handle: int, max_bytes: int,
                  deadline: Deadline) -> bytes:
        data = b""
        for _ in range(MAX_READS):
            # One byte more than allowed, so "too large" is detectable.
            want = max_bytes + 1 - len(data)
            try:
                reply = agent.command("guest-file-read", {"handle": handle, "count": want},
                                      deadline.call_timeout())
            except AgentError as err:
                if capabilities.is_blocked_error(err):
                    raise FileBlocked("guest-file-read", err) from None
                if err.kind is ErrorKind.COMMAND_FAILED:
                    raise GuestFileError("cannot read: %s" % one_line(err.message)) from None
                raise
            chunk, eof = _decode_read(reply, want)
            data += chunk
            if eof or not chunk or len(data) > max_bytes:
                break
        if len(data) > max_bytes:
            raise GuestFileError("file is larger than max_bytes=%d" % max_bytes)
        return data

    def _close(self, agent: AgentChannel, handle: int, deadline: Deadline) -> None:
        try:
            agent.command("guest-file-close", {"handle": handle},
                          max(CLEANUP_CALL_TIMEOUT, deadline.remaining()))
        except AgentError as err:
            if err.kind in _STILL_OPEN_KINDS and len(self._stale_handles) < MAX_STALE_HANDLES:
                self._stale_handles.append(handle)
            # Once per reader: a guest that keeps failing would otherwise
            # log this every round.
            text = one_line(str(err))
            if self._close_trouble.active():
                LOG.debug("guest-file-close of handle %d failed: %s", handle, text)
            else:
                self._close_trouble.problem("guest-file-close of handle %d failed: %s",
                                            handle, text)


def _decode_read(reply: object, want: int) -> tuple[bytes, bool]:
    """Check a GuestFileRead reply against what we asked for.

    The agent is inside the guest and untrusted: it could send more than
    requested, so the base64 text is bounded before it is decoded.
    """
    if not isinstance(reply, dict) or not isinstance(reply.get("buf-b64"), str):
        raise GuestFileError("malformed guest-file-read reply")
    text = reply["buf-b64"]
    if len(text) > 4 * ((want + 2) // 3) + 4:
        raise GuestFileError("guest-file-read returned more than the %d bytes asked for" % want)
    try:
        chunk = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise GuestFileError("guest-file-read returned invalid base64") from None
    if len(chunk) > want:
        raise GuestFileError("guest-file-read returned more than the %d bytes asked for" % want)
    return chunk, reply.get("eof") is True
