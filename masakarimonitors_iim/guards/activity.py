"""The activity guard: a silent agent in a guest still doing I/O is not
reported.

The agent is one process in the guest; it can hang, crash or be killed
(out of memory, an upgrade gone wrong) while the guest and its
applications keep serving. A restart would then cause the outage it is
meant to end. So before a failure that rests only on the agent not
answering is reported, the guest's own disk and network counters, read
by the hypervisor, are compared over the last ``window`` seconds of the
failure streak (vSphere HA VM Monitoring does the same over 120 s before
a reset): if the guest read or wrote its disks or sent on its network,
the report is held ("agent failed, guest active") and logged, and asked
again on the next failed round; once the I/O stops for a whole window,
the next failed round reports.

What counts, and why:

* Disk bytes read and written, and network bytes *sent* by the guest.
  Received bytes do not count: broadcasts, ARP and clients retrying
  reach a dead guest too.
* vCPU time does not count: a guest whose kernel is wedged in a loop
  burns CPU, and under TCG even an idle guest's vCPU time moves (timer
  interrupts are emulated), so it proves nothing.
* Less than ``min_bytes`` in the window does not count: a kernel whose
  userspace is dead still answers ARP and TCP keepalives, a few hundred
  bytes a minute.
* An application probe's failure is never held: the check ran and said
  the application is down, whatever the I/O counters say.
* A domain whose policy sets ``corroborate: false`` is never sampled
  (the prober skips the call), so never held.

The samples come from the prober (libvirt counter calls on the worker,
only on agent-only FAILED rounds) through :meth:`ActivityGuard.sample`,
called by the scheduler before the verdict is applied; the guard itself
does no I/O, as guards must not. The comparison is the pure
:func:`moved`, tested as a table.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

from masakarimonitors_iim.hypervisor.types import Activity
from masakarimonitors_iim.verdict import ProbeResult, Verdict

#: vSphere HA's I/O stats interval: no reset while the guest did disk or
#: network I/O in the last 120 s.
DEFAULT_WINDOW = 120.0
#: Below this many bytes in the window the guest is not "active": see the
#: module docstring (kernel chatter of a guest whose userspace is dead).
DEFAULT_MIN_BYTES = 64 * 1024
#: Samples kept per domain at most: one per failed round within the window
#: is far fewer at any sane interval; this only bounds memory.
MAX_SAMPLES = 64


@dataclasses.dataclass(frozen=True)
class Moved:
    """What the guest did between two samples."""

    block_bytes: int
    net_bytes: int
    seconds: float


def moved(samples: Sequence[Activity], window: float) -> Moved | None:
    """Disk and network bytes between the oldest sample within ``window``
    seconds of the newest and the newest; None with fewer than two such
    samples (one sample cannot show movement). Counters that went down
    (the QEMU process restarted) count as no movement, never negative."""
    if len(samples) < 2:
        return None
    latest = samples[-1]
    inside = [s for s in samples[:-1] if latest.at - s.at <= window and s.at < latest.at]
    if not inside:
        return None
    base = inside[0]
    return Moved(block_bytes=max(0, latest.block_bytes - base.block_bytes),
                 net_bytes=max(0, latest.net_bytes - base.net_bytes),
                 seconds=latest.at - base.at)


def active(m: Moved | None, min_bytes: int) -> bool:
    """Did the guest do enough I/O to be called active?"""
    return m is not None and m.block_bytes + m.net_bytes >= min_bytes


def reason(m: Moved) -> str:
    return ("agent failed, guest active: %d KiB disk and %d KiB network I/O in the last "
            "%d s; not reported while the guest works (policy corroborate: false "
            "reports it)" % (m.block_bytes // 1024, m.net_bytes // 1024, round(m.seconds)))


class ActivityGuard:
    """Keeps each domain's I/O samples over its current agent-only
    failure streak; see the module docstring."""

    name = "activity"

    def __init__(self, window: float = DEFAULT_WINDOW,
                 min_bytes: int = DEFAULT_MIN_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.min_bytes = min_bytes
        self._clock = clock     # the samples' clock (Activity.at is monotonic)
        self._samples: dict[str, list[Activity]] = {}

    def sample(self, uuid: str, activity: Activity | None) -> None:
        """A round's counters (None: the round took none)."""
        if activity is None:
            return
        kept = self._samples.setdefault(uuid, [])
        if kept and (activity.at <= kept[-1].at
                     or activity.block_bytes < kept[-1].block_bytes
                     or activity.net_bytes < kept[-1].net_bytes):
            kept.clear()    # a new QEMU process (or clock trouble): start over
        kept.append(activity)
        del kept[:-MAX_SAMPLES]
        while kept and activity.at - kept[0].at > self.window:
            kept.pop(0)

    def note(self, uuid: str, result: ProbeResult, now: float) -> None:
        """A HEALTHY round or an application failure ends the agent-only
        streak. UNKNOWN does not: a paused minute in the middle of a
        streak must not make an active guest look unsampled."""
        if result.verdict is Verdict.HEALTHY or (
                result.verdict is Verdict.FAILED and not result.agent_only):
            self._samples.pop(uuid, None)

    def hold(self, uuid: str, name: str, result: ProbeResult, now: float) -> str | None:
        if result.verdict is not Verdict.FAILED or not result.agent_only:
            return None
        kept = self._samples.get(uuid)
        if not kept or self._clock() - kept[-1].at > self.window:
            return None     # no recent sample: nothing says the guest works
        m = moved(kept, self.window)
        if m is None or not active(m, self.min_bytes):
            return None
        return reason(m)

    def forget(self, uuid: str) -> None:
        self._samples.pop(uuid, None)

    def watching(self) -> int:
        """Domains with samples kept, for tests and metrics."""
        return len(self._samples)
