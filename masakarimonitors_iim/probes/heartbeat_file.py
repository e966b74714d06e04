"""heartbeat_file: an application proves it is alive by refreshing a file.

The application writes either a unix timestamp (``format: timestamp``) or
a counter (``format: counter``) into a small file in the guest; the probe
reads it with guest-file-open/read/close.

How time is judged (the guest clock is not trusted for FAILED):

* FAILED is decided on the host's monotonic clock only: the value has
  not changed for more than ``max_age`` seconds of host time while we
  kept looking. Guest clocks jump after pause/resume, migration, or an
  NTP step, and a FAILED restarts the VM, so a wrong guest clock must
  never be able to produce one.
* For ``timestamp`` the guest's value is also compared with the host's
  wall clock, allowing ``max_skew`` seconds either way. A value within
  ``max_age + max_skew`` of host time is HEALTHY at once, even on the
  very first read. A value outside that window only shows the clocks
  disagree; the probe then judges by whether the value keeps changing
  (HEALTHY, with a note to fix guest time sync) or not (UNKNOWN until
  ``max_age`` has passed, then FAILED).
* For ``counter`` any change counts as a sign of life (a counter that
  restarts from 0 after an application restart changed too). The first
  reading is UNKNOWN until the counter is seen to move.
* A gap between two reads counts for at most ``max_age / 2``: during a
  long gap (domain paused, agent away, monitor stalled) the application
  may have been frozen too, so after it the application gets at least
  half of ``max_age`` of watched time to write again before FAILED. The
  gap still counts for something, so reads that are always far apart
  (an interval longer than ``max_age``) delay a FAILED but never prevent
  it. After a gap longer than ``max_age`` a counter must be seen moving
  again before it is HEALTHY. Choose ``max_age`` of at least twice the
  policy interval.

Detection time: at most ``max_age`` plus one interval after the last
write, then the policy's failure threshold. A missing file is "waiting
for first heartbeat" (UNKNOWN) until one has been read, FAILED after.
Applications should write the file atomically (write a temporary file,
then rename), or a read may see it half-written (reported UNKNOWN).
"""
from __future__ import annotations

from typing import Any, Mapping

import re2

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
from masakarimonitors_iim.verdict import ProbeResult

# RE2, as for every pattern run on what the guest wrote (see exec_judge).
_TIMESTAMP = re2.compile(r"^[0-9]{1,12}(\.[0-9]{1,9})?$")
_COUNTER = re2.compile(r"^[0-9]{1,20}$")

NAME = "heartbeat_file"
KNOWN = {"path", "max_age", "format", "max_bytes", "max_skew"}


class HeartbeatFileProbe(Probe):
    name = NAME

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        p = self.params
        _params.reject_unknown(NAME, p, KNOWN)
        self.path = _params.guest_path(NAME, p, "path", "/run/myapp/heartbeat")
        if "max_age" not in p:
            raise _params.fail(NAME, "max_age", "is required: seconds within which the "
                               "application must refresh the file, e.g. 30")
        self.max_age = _seconds(p, "max_age", None, 1, 86400)
        self.format = _params.choice(NAME, p, "format", "timestamp", ("timestamp", "counter"))
        self.max_bytes = _params.integer(NAME, p, "max_bytes", 64, 1, 4096)
        self.max_skew = _seconds(p, "max_skew", 10, 0, 86400)
        if "max_skew" in p and self.format != "timestamp":
            raise _params.fail(NAME, "max_skew", "only applies to format 'timestamp': "
                               "remove it")
        self._reader = GuestFileReader()
        self._value: float | None = None   # last value read, None before the first
        self._stalled = 0.0                # watched seconds since the value last changed
        self._advanced = False             # value seen changing since the last blind gap
        self._last_look: float | None = None  # host monotonic time of the last read attempt

    @classmethod
    def policy_notes(cls, params: Mapping[str, Any], interval: float,
                     timeout: float) -> list[str]:
        """Each gap between reads counts for at most ``max_age / 2`` (see
        the module docstring), so reads further apart than that stretch the
        time to a FAILED: say so."""
        max_age = params.get("max_age")
        if isinstance(max_age, (int, float)) and max_age < 2 * interval:
            return ["probe 'heartbeat_file' max_age %g s is less than twice the "
                    "interval %g s: a stalled heartbeat may go unnoticed; raise "
                    "max_age or lower interval" % (max_age, interval)]
        return []

    def required_commands(self) -> set[str]:
        return set(GuestFileReader.REQUIRED_COMMANDS)

    def run(self, agent: AgentChannel, timeout: float) -> ProbeResult:
        deadline = Deadline(timeout, self._clock)
        try:
            data = self._reader.read(agent, self.path, self.max_bytes, deadline)
        except FileBlocked as blocked:
            return ProbeResult.unknown(
                capabilities.runtime_blocked_reason(NAME, blocked.command, blocked.err))
        except FileMissing:
            self._look()
            if self._value is None:
                return ProbeResult.unknown("waiting for first heartbeat: %s does not exist yet"
                                           % self.path)
            return ProbeResult.failed("heartbeat file %s has disappeared" % self.path)
        except GuestFileError as err:
            return self._no_value("cannot read heartbeat file %s: %s" % (self.path, err))
        value = self._parse(data)
        if value is None:
            return self._no_value("heartbeat file %s does not hold a %s: %r"
                                  % (self.path, self.format, one_line(data, 40)))
        return self._judge(value)

    def close(self, agent: AgentChannel | None) -> None:
        self._reader.close_stale(agent)

    def _look(self) -> None:
        """Note a completed look at the file and count the time since the
        previous one, capped (see the module docstring)."""
        now = self._clock()
        if self._last_look is not None:
            gap = now - self._last_look
            self._stalled += min(gap, self.max_age / 2)
            if gap > self.max_age:
                self._advanced = False
        self._last_look = now

    def _parse(self, data: bytes) -> float | None:
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            return None
        pattern = _TIMESTAMP if self.format == "timestamp" else _COUNTER
        if not pattern.match(text):
            return None
        return float(text) if self.format == "timestamp" else int(text)

    def _no_value(self, reason: str) -> ProbeResult:
        """The file was there but gave no usable value this round."""
        self._look()
        if self._value is not None and self._stalled > self.max_age:
            return ProbeResult.failed("heartbeat not updated for %.0f s (max_age %g s); %s"
                                      % (self._stalled, self.max_age, reason))
        return ProbeResult.unknown(reason)

    def _judge(self, value: float) -> ProbeResult:
        self._look()
        if self._value is None:
            self._stalled = 0.0
        elif value != self._value:
            self._stalled = 0.0
            self._advanced = True
        self._value = value
        stalled = self._stalled
        if stalled > self.max_age:
            return ProbeResult.failed("heartbeat %s not updated for %.0f s (max_age %g s)"
                                      % (self.path, stalled, self.max_age))
        if self.format == "counter":
            if self._advanced:
                return ProbeResult.healthy()
            return ProbeResult.unknown("heartbeat counter %d read; waiting to see it advance"
                                       % value)
        lag = self._wallclock() - value
        if -self.max_skew <= lag <= self.max_age + self.max_skew:
            return ProbeResult.healthy()
        if self._advanced:
            return ProbeResult.healthy(
                "heartbeat advancing but its timestamp is %+.0f s off the host clock: "
                "check guest time sync" % -lag)
        return ProbeResult.unknown(
            "heartbeat timestamp is %+.0f s off the host clock; watching whether it "
            "advances (guest clock skew, or a stale heartbeat)" % -lag)


def _seconds(params: Mapping[str, Any], field: str, default: float | None,
             minimum: float, maximum: float) -> float:
    """A number of seconds that cannot be None: ``_params.number`` passes an
    explicit null through, and every use here is arithmetic."""
    value = _params.number(NAME, params, field, default, minimum, maximum)
    if value is None:
        raise _params.fail(NAME, field, "must be a number, got None")
    return value
