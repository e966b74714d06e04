"""What the journal knows about one domain, in the words its rules share.

A module of its own so that :mod:`.machine` (how verdicts move a record)
and :mod:`.boot` (what a new boot means for it) can both speak of a
:class:`Record` without importing each other; callers keep importing
these names from :mod:`.machine`, which re-exports them.
"""

from __future__ import annotations

import dataclasses
import enum

from masakarimonitors_iim.verdict import Verdict


class State(str, enum.Enum):
    """Where a domain stands in its current failure episode.

    DISCOVERY means "not yet proven healthy since it (re)started": a guest
    that is booting, or has no agent installed, fails its probes without
    being broken, so it is never reported from here.
    """

    DISCOVERY = "DISCOVERY"
    HEALTHY = "HEALTHY"
    FAILING = "FAILING"
    REPORTED = "REPORTED"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """How patient the machine is, per domain (policy decides the numbers)."""

    failure: int
    success: int
    #: seconds after a boot (entering DISCOVERY) by which a guest proven
    #: healthy in an earlier boot must be healthy again; None: no deadline
    boot_deadline: float | None = None
    #: also report a guest never seen healthy past the deadline
    boot_report_always: bool = False

    def __post_init__(self) -> None:
        # A threshold of 0 would report (or recover) on no evidence at all.
        if self.failure < 1 or self.success < 1:
            raise ValueError(
                "thresholds must be >= 1 (failure=%r, success=%r)"
                % (self.failure, self.success))


@dataclasses.dataclass(frozen=True)
class Record:
    """Everything the journal knows about one domain.

    ``failures``/``successes`` are the current consecutive FAILED/HEALTHY
    streaks (UNKNOWN neither extends nor breaks them). ``episode`` counts
    reported episodes over the domain's life and is the outbox's
    idempotency key together with the uuid. ``first_failure_at`` is when
    the current failure streak began (kept while REPORTED, for status).
    ``seen_healthy`` is whether this domain was ever proven healthy: it
    lets status tell "booting again" from "never answered".
    ``held`` is why a due report is held by a guard ("" when none); it is
    cleared when the streak ends or the report goes out. ``boot_id``
    names the boot the journal last saw ("" unknown): a different one is
    a restart, even one the monitor was not running to see. ``boots``
    counts the boots of the current DISCOVERY (0: it began with a stop,
    or is unknown); more than one is a reboot loop, whose deadline still
    runs from the first boot's ``since``.
    """

    uuid: str
    name: str
    state: State
    failures: int = 0
    successes: int = 0
    episode: int = 0
    last_verdict: Verdict | None = None
    last_reason: str = ""
    since: float = 0.0
    first_failure_at: float | None = None
    seen_healthy: bool = False
    updated_at: float = 0.0
    held: str = ""
    boot_id: str = ""
    boots: int = 0


@dataclasses.dataclass(frozen=True)
class Report:
    """The machine's decision that episode ``episode`` must be notified.

    ``detected_at`` is when the threshold was crossed (or the reset was
    requested); it becomes the notification's ``generated_time`` and must
    not change across delivery retries.
    """

    episode: int
    detected_at: float
    reason: str


def new_record(uuid: str, name: str, now: float) -> Record:
    """A domain we have just found: nothing proven yet, its first boot."""
    return Record(uuid=uuid, name=name, state=State.DISCOVERY,
                  since=now, updated_at=now, boots=1)
