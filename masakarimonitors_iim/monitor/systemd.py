"""Tell systemd how the monitor is doing (``Type=notify`` and its watchdog).

A monitor that hangs watches nothing while looking alive; with
``WatchdogSec=`` systemd restarts it when the scheduler stops turning.
The protocol is a few datagrams (``sd_notify(3)``) on the AF_UNIX socket
named in ``$NOTIFY_SOCKET``, so it is done here rather than with another
dependency:

* ``READY=1`` once the journal is open and the first libvirt connection
  attempt has finished, connected or not;
* ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, sent by the scheduler loop
  itself (never by a timer thread, which would keep pinging for a
  scheduler that hangs);
* ``STATUS=...`` a line ``systemctl status`` shows, sent when it changes;
* ``STOPPING=1`` when the monitor stops.

Without ``$NOTIFY_SOCKET`` (not run by systemd, or ``Type=simple``)
everything here does nothing. See ``etc/systemd/masakari-iim.service``.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Callable, Mapping

from oslo_log import log as logging

from masakarimonitors_iim.common.logonce import LogOnce
from masakarimonitors_iim.common.text import one_line

LOG = logging.getLogger(__name__)

#: The scheduler loop turns about once a second when idle, so pings can
#: be up to a second late: half a WatchdogSec below this leaves no margin.
MIN_PING_INTERVAL = 2.0


def socket_address(value: str | None) -> str | None:
    """``$NOTIFY_SOCKET`` as an AF_UNIX address: a path, or an abstract
    name (``@name`` -> NUL + name); None when unset or not AF_UNIX."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def ping_interval(env: Mapping[str, str]) -> tuple[float | None, str]:
    """Seconds between two watchdog pings (half of ``$WATCHDOG_USEC``),
    or None, with the reason when the value is unusable."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None, ""
    try:
        value = int(usec)
    except ValueError:
        return None, "WATCHDOG_USEC=%s is not a whole number of microseconds" % one_line(usec, 40)
    if value <= 0:
        return None, "WATCHDOG_USEC=%d is not positive" % value
    return value / 2e6, ""


class SystemdNotifier:
    """Sends sd_notify messages to ``address``; does nothing without one.

    Called from the scheduler thread (ready, watchdog, status) and from
    whoever stops the monitor (stopping). Sends never block: the socket
    is non-blocking, and a message systemd cannot take now is dropped
    (the next ping follows within half the watchdog period) and logged
    once.
    """

    def __init__(self, address: str | None, interval: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self.interval = interval if address else None
        self._clock = clock
        self._next_ping = 0.0
        self._status = ""
        self._trouble = LogOnce(LOG)
        if self.interval is not None and self.interval < MIN_PING_INTERVAL:
            LOG.warning("systemd WatchdogSec=%.1fs is too short: the scheduler loop "
                        "turns about once a second; use WatchdogSec=4 or more",
                        self.interval * 2)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None,
                         pid: int | None = None) -> SystemdNotifier:
        """The notifier the environment asks for: none unless systemd set
        ``$NOTIFY_SOCKET``, and none in a process other than the one
        systemd watches (``$WATCHDOG_PID``): a worker forked by a launcher
        (masakari-monitors loading this monitor) is not the service."""
        env = os.environ if env is None else env
        owner = env.get("WATCHDOG_PID", "")
        if owner and owner != str(os.getpid() if pid is None else pid):
            return cls(None)
        raw = env.get("NOTIFY_SOCKET", "")
        address = socket_address(raw)
        if raw and address is None:
            LOG.warning("NOTIFY_SOCKET=%s is not an AF_UNIX socket; not notifying systemd",
                        one_line(raw, 100))
        interval, problem = ping_interval(env)
        if address and problem:
            LOG.warning("systemd watchdog off: %s", problem)
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self._status = one_line(status)
        self._send("READY=1\nSTATUS=%s" % self._status)

    def status(self, text: str) -> None:
        text = one_line(text)
        if text != self._status:
            self._status = text
            self._send("STATUS=%s" % text)

    def watchdog(self) -> None:
        """Ping, if half the watchdog period has passed since the last
        ping; call it each time the loop it vouches for turns."""
        if self.interval is None:
            return
        now = self._clock()
        if now >= self._next_ping:
            self._next_ping = now + self.interval
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")
        self.interval = None   # no ping after STOPPING

    def _send(self, message: str) -> bool:
        if self.address is None:
            return False
        try:
            # A socket per message, as sd_notify does: a few a second at
            # most, and nothing shared between the threads that notify.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            self._trouble.problem("cannot notify systemd at %s: %s",
                                  one_line(self.address.replace("\0", "@"), 120),
                                  one_line(exc))
            return False
        self._trouble.resolved("notifying systemd works again")
        return True
