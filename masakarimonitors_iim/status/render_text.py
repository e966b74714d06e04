"""``masakari-iim status`` as text an operator reads at a glance.

One summary line, then one line per domain and one per notification, in
tables whose column widths come from the data: names are never cut
(Nova's ``instance-00000001`` and ``instance-00000002`` must stay apart),
and a host with a hundred domains is a hundred aligned lines. Only the
last column (free text) is capped. Ages are relative to ``view.now``.
"""
from __future__ import annotations

import collections
import datetime
from typing import Sequence

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.status.model import (
    UNMONITORED, BacklogView, DomainView, NotificationView, StatusView, StormView)

#: Caps for the text table only (JSON has the full texts).
DISPLAY_NAME_WIDTH = 40
REASON_WIDTH = 200


def render(view: StatusView, detail: bool = False) -> str:
    """The whole status; ``detail`` adds each probe's reason and duration
    (for ``status DOMAIN``)."""
    lines = _header(view)
    if view.domains:
        lines += [""] + _table(
            ("DOMAIN", "NAME", "DISPLAY NAME", "JOURNAL", "FOR", "FAILS", "VERDICT",
             "GRACE", "PROBES (VERDICT, AGE)", "REASON"),
            [_domain_row(view, d) for d in view.domains])
    if detail:
        for d in view.domains:
            lines += _probe_detail(view.now, d)
    lines += [""] + notification_lines(view.now, view.notifications)
    return "\n".join(lines)


def notification_lines(now: float, notifications: Sequence[NotificationView]) -> list[str]:
    """The notifications table (also ``masakari-iim outbox list``)."""
    if not notifications:
        return ["notifications: none"]
    return ["notifications:"] + _table(
        ("ID", "DOMAIN", "NAME", "EPISODE", "GENERATED", "STATUS", "ATTEMPTS",
         "MASAKARI UUID", "ENGINE", "DETAIL"),
        [_notification_row(now, n) for n in notifications])


def ago(seconds: float) -> str:
    """A duration, short: 7s, 3m05s, 2h13m, 4d02h."""
    s = max(0, int(seconds))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % divmod(s, 60)
    if s < 2 * 86400:
        return "%dh%02dm" % divmod(s // 60, 60)
    return "%dd%02dh" % divmod(s // 3600, 24)


def utc(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(
        timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(view: StatusView) -> list[str]:
    lines = ["host %s, %s" % (view.host or "?", utc(view.now))]
    if not view.journal_found:
        lines.append("no journal at %s: the monitor has not run with this configuration"
                     % view.journal_path)
    if view.snapshot_at is None:
        lines.append("no snapshot from a running monitor: probes, graces and display "
                     "names are unknown (is the monitor running?)")
    else:
        lines.append("monitor snapshot written %s ago (%s)"
                     % (ago(view.now - view.snapshot_at), utc(view.snapshot_at)))
    states = collections.Counter(d.state for d in view.domains)
    outbox = collections.Counter(n.status for n in view.notifications)
    lines.append("domains: %d%s; notifications: %d%s" % (
        len(view.domains), _counts(states), len(view.notifications), _counts(outbox)))
    if view.storm is not None:
        lines.append(storm_line(view.now, view.storm))
    if view.backlog is not None:
        lines.append(backlog_line(view.backlog))
    return lines


def backlog_line(b: BacklogView) -> str:
    """Rounds waiting for an agent slot: hung guests beyond what the slots
    confirm per interval are detected that much later."""
    slots = "%d agent slots, %d for domains not healthy" % (b.slots, b.suspect_slots)
    if not b.overdue:
        return "probe backlog: none (%s)" % slots
    return ("probe backlog: %d rounds waiting for an agent slot (%d healthy, %d suspect), "
            "the oldest for %.1f s; failures are detected that much later (%s; see "
            "Sizing in the operations guide)" % (b.overdue, b.healthy, b.suspect,
                                                  b.oldest_seconds, slots))


def storm_line(now: float, s: StormView) -> str:
    """The host-level storm guard, one line."""
    if not s.enabled:
        return "storm guard: off"
    if not s.holding:
        return ("storm guard: not holding (%d of %d domains failing; holds when %d begin "
                "failing within %d s)" % (s.failing, s.watched, s.needed, s.window))
    since = s.since if s.since is not None else now
    line = ("storm guard: HOLDING notifications since %s (for %s): %d of %d domains "
            "failing; the host, libvirt or storage is the likely cause"
            % (utc(since), ago(now - since), s.failing, s.watched))
    if s.calm_since is not None:
        line += "; clears in %s if it stays below %d" % (
            ago(s.calm_since + s.window - now), s.needed)
    else:
        line += "; clears %d s after fewer than %d fail" % (s.window, s.needed)
    if s.releases_at is not None:
        line += "; releases held reports at %s at the latest" % _clock(now, s.releases_at)
    return line


def _clock(now: float, timestamp: float) -> str:
    """The time of day alone when it is today (UTC), as a hold usually
    ends within the hour; the date too otherwise."""
    day = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    when = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return when.strftime("%H:%M:%S UTC") if when.date() == day else utc(timestamp)


def _counts(counter: collections.Counter[str]) -> str:
    if not counter:
        return ""
    return " (%s)" % ", ".join("%d %s" % (n, k) for k, n in sorted(counter.items()))


def _domain_row(view: StatusView, d: DomainView) -> list[str]:
    now = view.now
    graces = [(word, until) for word, until in (("startup", d.startup_grace_until),
                                                ("disconnect", d.disconnect_grace_until))
              if until is not None and until > now]
    probes = ["%s %s %s" % (p.name, "skipped" if p.skipped else p.verdict,
                            ago(now - p.at) if p.at is not None else "?")
              for p in d.probes]
    why = ["held: " + d.held if d.held else "", d.boot, d.reason, d.note,
           "agent timeout %g s (set while suspect)" % d.agent_timeout
           if d.agent_timeout is not None else ""]
    if view.snapshot_at is not None and not d.listed:
        why.append("not in the monitor's last listing (not running?)")
    return [d.uuid, d.name or "-", one_line(d.display_name, DISPLAY_NAME_WIDTH) or "-",
            d.state + (" (held)" if d.held else ""), ago(now - d.since) if d.since else "-",
            "-" if d.state == UNMONITORED else str(d.failures),
            d.verdict or "-",
            ", ".join("%s %s" % (w, ago(u - now)) for w, u in graces) or "-",
            ", ".join(probes) or "-",
            one_line("; ".join(w for w in why if w), REASON_WIDTH)]


def _probe_detail(now: float, d: DomainView) -> list[str]:
    if not d.probes:
        return []
    return ["", "probes of %s (%s):" % (d.name or d.uuid, d.uuid)] + _table(
        ("PROBE", "VERDICT", "TOOK", "AGE", "REASON"),
        [[p.name, "skipped" if p.skipped else p.verdict, "%.3fs" % p.seconds,
          ago(now - p.at) if p.at is not None else "?", p.reason] for p in d.probes],
        indent="  ")


def _notification_row(now: float, n: NotificationView) -> list[str]:
    if n.status == "pending":
        when = n.next_attempt_at - now
        detail = "OVERDUE; " if n.overdue else ""
        detail += "next attempt %s" % ("in " + ago(when) if when > 0 else "now")
        if n.last_error:
            detail += "; last error: " + n.last_error
    else:
        verb = "delivered" if n.status == "delivered" else "died"
        detail = verb + (" %s ago" % ago(now - n.settled_at) if n.settled_at else "")
        if n.last_error:
            detail += "; %s: %s" % ("answer" if n.status == "delivered" else "why",
                                    n.last_error)
    engine = "-"
    if n.engine_status:
        engine = n.engine_status + (" (%s ago)" % ago(now - n.engine_checked_at)
                                    if n.engine_checked_at else "")
    return [str(n.id), n.instance_uuid, n.name or "-", str(n.episode), n.generated_time,
            n.status, str(n.attempts), n.masakari_uuid or "-", engine,
            one_line(detail, REASON_WIDTH)]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]],
           indent: str = "") -> list[str]:
    """Left-aligned columns as wide as their widest cell; the last column
    is not padded."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out = []
    for cells in [list(headers)] + [list(r) for r in rows]:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths)] + [cells[-1]]
        out.append((indent + "  ".join(padded)).rstrip())
    return out
