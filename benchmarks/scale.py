"""Scale benchmark: the real monitor, many guests, some hung. Prints figures, asserts nothing.

What runs is the real :class:`masakarimonitors_iim.monitor.service.Monitor`:
its scheduler, the real ``WorkerPool``, the real ``Prober`` and ``ping``
probe, policy, status writes, the journal (SQLite in a temporary
directory) and the outbox ``Sender``. Two things are not real: the
hypervisor is :class:`scale_sim.SimHypervisor` (no libvirt; a healthy
guest answers in 3 ms, a hung one costs the whole timeout), and the
notifier records each notification instead of sending it over HTTP.

Each configuration runs in its own process (so peak RSS is its own):
start the monitor on a fresh journal, wait for every domain's first
verdict (start-up), make ``hung`` % of the guests hang, then watch until
every hung guest is detected and at least 3 intervals have passed, or
until the detection bound plus 3 intervals. Figures are taken over that
window only. Run from the repository root:

    .venv/bin/python benchmarks/scale.py            # the full matrix (~10 min)
    .venv/bin/python benchmarks/scale.py --quick    # a smoke run (~30 s)
    .venv/bin/python benchmarks/scale.py --n 1000 --hung 10

README.md says what each column means.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# The code of this checkout, whatever is installed; and scale_sim beside it.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from oslo_config import cfg  # noqa: E402

from masakarimonitors_iim import conf as iim_conf  # noqa: E402
from masakarimonitors_iim.db import Database  # noqa: E402
from masakarimonitors_iim.monitor.service import Monitor  # noqa: E402
from masakarimonitors_iim.monitor.settings import settings_from_conf  # noqa: E402
from masakarimonitors_iim.notifier.base import (  # noqa: E402
    DeliveryOutcome, DeliveryStatus, Notification, Notifier)
from masakarimonitors_iim.prober import Prober, RoundOutcome, RoundSpec  # noqa: E402
from masakarimonitors_iim.status import read_snapshot, status_path  # noqa: E402
from masakarimonitors_iim.verdict import Verdict  # noqa: E402
from masakarimonitors_iim.workers import WorkerPool  # noqa: E402
from scale_sim import SimHypervisor  # noqa: E402

GROUP = "introspectiveinstancemonitor"
FULL = [(n, h) for n in (100, 500, 1000, 2000) for h in (0, 1, 10)]


#: Healthy guests whose quick first call went unanswered (monitor/metrics.py);
#: absent from code before the quick call (then 0).
RECHECKS = "masakari_iim_rechecks_total"


def progress(msg: str) -> None:
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# -- instruments: record, never decide ---------------------------------------------

class Recorder:
    """When each round was due, ran, and was applied."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        #: uuid -> due time of the round the scheduler just started
        self.due: dict[str, float] = {}
        self.pending: dict[int, tuple[Any, float, float, float]] = {}
        #: uuid -> [(applied, verdict, due, started)]
        self.applied: dict[str, list[tuple[float, str, float, float]]] = {}
        self.notified: dict[str, float] = {}


def record_due_times(mon: Monitor, rec: Recorder) -> str:
    """Where the due time of a round comes from. A scheduler with a
    ``Schedule`` (``mon.dispatch.schedule.take``) says when each round it
    starts was due; the older scheduler handed every due domain to the
    pool at once, so the hand-over time is its due time (TimedPool)."""
    schedule: Any = getattr(getattr(mon, "dispatch", None), "schedule", None)
    inner = getattr(schedule, "take", None)
    if schedule is None or inner is None:
        return "hand-over to the pool"

    def take(*args: Any, **kwargs: Any) -> list[Any]:
        starts = list(inner(*args, **kwargs))
        with rec.lock:
            for start in starts:
                rec.due[start.uuid] = start.due
        return starts
    schedule.take = take
    return "Schedule.take"


class TimedPool(WorkerPool):
    """The real pool; each job carries the time it was handed over."""

    def __init__(self, size: int, rec: Recorder) -> None:
        super().__init__(size)
        self._rec = rec

    def submit(self, job: Any, cleanup: bool = False) -> None:
        handed = time.monotonic()

        def timed() -> None:
            self._rec.local.handed = handed
            job()
        super().submit(timed, cleanup)


class TimedProber(Prober):
    def __init__(self, hv: SimHypervisor, rec: Recorder) -> None:
        super().__init__(hv)
        self._rec = rec

    def run(self, spec: RoundSpec) -> RoundOutcome:
        started = time.monotonic()
        outcome = super().run(spec)
        due = getattr(self._rec.local, "handed", started)
        with self._rec.lock:   # keyed by the result object, kept alive here
            due = self._rec.due.pop(spec.uuid, due)
            self._rec.pending[id(outcome.result)] = (outcome.result, due, started,
                                                     time.monotonic())
        return outcome


class RecordingNotifier(Notifier):
    """Records the time of each notification instead of sending it."""

    name = "bench"

    def __init__(self, conf: cfg.ConfigOpts, rec: Recorder) -> None:
        super().__init__(conf)
        self._rec = rec

    def send(self, notification: Notification) -> DeliveryOutcome:
        with self._rec.lock:
            self._rec.notified.setdefault(notification.instance_uuid, time.monotonic())
        return DeliveryOutcome(DeliveryStatus.DELIVERED, "recorded by the benchmark")


def record_verdicts(mon: Monitor, rec: Recorder) -> None:
    """Wrap the journal writer's verdict(): when each verdict is applied."""
    inner = mon.results.verdict

    def verdict(uuid: str, name: str, result: Any, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        with rec.lock:
            _, due, started, _ = rec.pending.pop(id(result), (None, now, now, now))
            rec.applied.setdefault(uuid, []).append(
                (now, result.verdict.value, due, started))
        return inner(uuid, name, result, *args, **kwargs)
    mon.results.verdict = verdict  # type: ignore[method-assign]


class SqlCounter:
    """Every statement on the journal's connection (sqlite3 trace callback)."""

    def __init__(self, db: Database) -> None:
        self.counts = {"COMMIT": 0, "SELECT": 0, "write": 0}
        db._conn.set_trace_callback(self._trace)  # type: ignore[union-attr]

    def _trace(self, sql: str) -> None:
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word in ("COMMIT", "SELECT"):
            self.counts[word] += 1
        elif word in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            self.counts["write"] += 1


# -- one configuration (in a child process) ----------------------------------------

def make_conf(args: argparse.Namespace, journal: Path) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    conf.set_override("hostname", "bench-host")
    conf.set_override("journal_path", str(journal), group=GROUP)
    conf.set_override("guest_monitoring_interval", args.interval, group=GROUP)
    conf.set_override("guest_monitoring_timeout", args.timeout, group=GROUP)
    conf.set_override("guest_monitoring_failure_threshold", args.threshold, group=GROUP)
    if args.workers:
        conf.set_override("probe_workers", args.workers, group=GROUP)
    iim_conf.validate(conf)
    return conf


def wait_until(cond: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    n, pct = args.n, args.hung
    interval, bound = args.interval, args.threshold * args.interval + args.timeout
    work = Path(tempfile.mkdtemp(prefix="iim-scale-"))
    logging.basicConfig(filename=str(work / "monitor.log"), level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(levelname)s %(name)s %(message)s")
    conf = make_conf(args, work / "journal.sqlite")
    settings = settings_from_conf(conf)
    rec = Recorder()
    sim = SimHypervisor(n, max_client_requests=args.max_client_requests)
    db = Database(settings.journal_path)
    sql = SqlCounter(db)
    mon = Monitor(settings, hypervisor=sim, db=db,
                  notifier=RecordingNotifier(conf, rec),
                  pool=TimedPool(settings.probe_workers, rec),
                  clock=time.monotonic, wall=time.time, prober=TimedProber(sim, rec))
    record_verdicts(mon, rec)
    due_source = record_due_times(mon, rec)
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.monotonic()
    mon.start()
    ok = wait_until(lambda: len(rec.applied) >= n, 6 * interval)
    startup = time.monotonic() - t0

    k = round(n * pct / 100)
    hung = {d.uuid for d in sim.domains[::max(1, n // k)][:k]} if k else set()
    cpu0, sim0, sql0 = time.process_time(), sim.snapshot(), dict(sql.counts)
    rechecks0 = mon.metrics.registry.get_sample_value(RECHECKS) or 0.0
    harness0 = time.thread_time()   # this thread only runs the harness
    t_hang = time.monotonic()
    sim.hang(hung)

    def detected() -> dict[str, float]:
        """uuid -> seconds from the hang to the verdict that made its failure
        streak reach the threshold."""
        out = {}
        with rec.lock:
            for uuid in hung:
                streak = 0
                for at, verdict, _, _ in rec.applied.get(uuid, []):
                    if at < t_hang:
                        continue
                    streak = streak + 1 if verdict == Verdict.FAILED.value else 0
                    if streak == args.threshold:
                        out[uuid] = at - t_hang
                        break
        return out

    backlog_seen = [0, 0.0]   # most rounds waiting, longest wait (status file)
    status_file = status_path(settings.journal_path)

    def done() -> bool:
        snap = read_snapshot(status_file) or {}
        backlog = snap.get("backlog")
        if isinstance(backlog, dict):
            backlog_seen[0] = max(backlog_seen[0], int(backlog.get("overdue") or 0))
            backlog_seen[1] = max(backlog_seen[1], float(backlog.get("oldest_seconds") or 0))
        return time.monotonic() - t_hang >= 3 * interval and len(detected()) == k

    wait_until(done, bound + 3 * interval, step=1.0)
    t_end = time.monotonic()
    cpu, sim1, sql1 = time.process_time() - cpu0, sim.snapshot(), dict(sql.counts)
    rechecks = (mon.metrics.registry.get_sample_value(RECHECKS) or 0.0) - rechecks0
    cpu -= time.thread_time() - harness0
    found = detected()
    mon.stop(3.0)
    window = t_end - t_hang
    intervals = window / interval

    with rec.lock:
        applied = {u: list(v) for u, v in rec.applied.items()}
        notified = dict(rec.notified)
    in_window = [(u, a) for u, rows in applied.items() for a in rows if t_hang <= a[0] < t_end]
    late, late_steady, late_last, gaps, healthy_total, healthy_bad = [], [], [], [], 0, 0
    for d in sim.domains:
        if d.uuid in hung:
            continue
        times = [a[0] for a in applied.get(d.uuid, [])]
        before = [t for t in times if t < t_hang][-1:]
        during = [t for t in times if t_hang <= t < t_end]
        marks = before + during
        gaps += [b - a for a, b in zip(marks, marks[1:])]
        if marks:   # a verdict still missing at the end counts too
            gaps.append(t_end - marks[-1])
        for a in applied.get(d.uuid, []):
            if t_hang <= a[0] < t_end:
                late.append(a[0] - a[2])
                if a[2] >= t_hang + interval:   # hung guests have had one round
                    late_steady.append(a[0] - a[2])
                if a[2] >= t_end - interval:    # the window's last interval
                    late_last.append(a[0] - a[2])
                healthy_total += 1
                healthy_bad += a[1] != Verdict.HEALTHY.value
    late.sort()
    calls = {key: sim1["calls"].get(key, 0) - sim0["calls"].get(key, 0)
             for key in sim1["calls"]}
    agent = sum(v for key, v in calls.items() if key.startswith("agent:"))
    rpcs = sum(v for key, v in calls.items() if not key.startswith("api:"))
    sim_cpu = sim1["cpu"] - sim0["cpu"]
    probes = len(in_window)
    log_text = (work / "monitor.log").read_text(errors="replace")
    backlog_lines = [line for line in log_text.splitlines() if "backlog" in line.lower()]
    result = {
        "n": n, "hung_pct": pct, "hung": k, "workers": settings.probe_workers,
        "startup_s": startup if ok else None, "window_s": window,
        "probes": probes,
        "cpu_per_probe_ms": 1000 * (cpu - sim_cpu) / probes if probes else None,
        "monitor_cpu_pct": 100 * (cpu - sim_cpu) / window,
        "sim_cpu_s": sim_cpu,
        "rss_base_mb": rss_base,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "due_from": due_source,
        "round_s": max((a[0] - a[2] for _, a in in_window), default=None),
        "gap_max_s": max(gaps, default=None),
        "late_max_s": late[-1] if late else None,
        "late_p99_s": late[int(0.99 * (len(late) - 1))] if late else None,
        "late_steady_max_s": max(late_steady, default=None),
        "late_last_max_s": max(late_last, default=None),
        "rechecks": rechecks,
        "healthy_verdicts": healthy_total, "healthy_not_healthy": healthy_bad,
        "bound_s": bound, "detected": len(found),
        "detect_min_s": min(found.values(), default=None),
        "detect_median_s": sorted(found.values())[len(found) // 2] if found else None,
        "detect_max_s": max(found.values(), default=None),
        "notified": len([u for u, t in notified.items() if u in hung and t >= t_hang]),
        "calls_per_dom_interval": rpcs / n / intervals,
        "agent_calls_per_dom_interval": agent / n / intervals,
        "other_calls": {key: v for key, v in calls.items()
                        if not key.startswith("agent:") and v},
        "peak_in_flight": sim1["peak_in_flight"], "slot_wait_max_s": sim1["slot_wait_max"],
        "commits_per_interval": (sql1["COMMIT"] - sql0["COMMIT"]) / intervals,
        "selects_per_verdict": (sql1["SELECT"] - sql0["SELECT"]) / probes if probes else None,
        "backlog_in_status": backlog_seen[0], "backlog_oldest_s": backlog_seen[1],
        "backlog_log_lines": len(backlog_lines),
        "backlog_log_example": backlog_lines[0][-200:] if backlog_lines else "",
        "work_dir": str(work),
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


# -- the report ---------------------------------------------------------------------

def machine_lines(label: str) -> list[str]:
    def first(path: str, key: str) -> str:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith(key)), "?")

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True,
                              text=True, check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    code = ("%s, %d tracked files changed in the working tree"
            % (head, len(git("status", "--porcelain", "--untracked-files=no").splitlines()))
            if head else "%s (not a git checkout)" % ROOT)
    return [
        "date:    %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "code:    %s%s" % (code, "; " + label if label else ""),
        "machine: %s" % " ".join(platform.uname()),
        "cpu:     %s; %d cores (usable: %d)" % (first("/proc/cpuinfo", "model name"),
                                                os.cpu_count() or 0,
                                                len(os.sched_getaffinity(0))),
        "memory:  %.1f GiB" % (int(first("/proc/meminfo", "MemTotal").split()[0]) / 2**20),
        "python:  %s" % platform.python_version(),
        "load:    %.2f %.2f %.2f (1/5/15 min, before the run)" % os.getloadavg(),
    ]


def fmt(value: Any, spec: str = "%.1f") -> str:
    return "-" if value is None else spec % value


COLUMNS = [
    ("N", 5, lambda r: "%d" % r["n"]),
    ("hung", 8, lambda r: "%d%% %d" % (r["hung_pct"], r["hung"])),
    ("wk", 3, lambda r: "%d" % r["workers"]),
    ("start s", 7, lambda r: fmt(r["startup_s"])),
    ("cpu/probe ms", 12, lambda r: fmt(r["cpu_per_probe_ms"], "%.3f")),
    ("rss MB", 6, lambda r: fmt(r["rss_peak_mb"], "%.0f")),
    ("round s", 7, lambda r: fmt(r["round_s"])),
    ("late max/p99/after 1st iv s", 26, lambda r: "%s/%s/%s" % (
        fmt(r["late_max_s"]), fmt(r["late_p99_s"]), fmt(r.get("late_steady_max_s")))),
    ("late last iv s", 14, lambda r: fmt(r.get("late_last_max_s"))),
    ("rechecks", 8, lambda r: fmt(r.get("rechecks"), "%.0f")),
    ("gap s", 5, lambda r: fmt(r.get("gap_max_s"))),
    ("healthy !ok", 11, lambda r: "%d/%d" % (r["healthy_not_healthy"], r["healthy_verdicts"])),
    ("detected min/med/max s (bound)", 30, lambda r: "-" if not r["hung"] else
     "%d/%d %s/%s/%s (%g)" % (r["detected"], r["hung"], fmt(r["detect_min_s"], "%.0f"),
                              fmt(r["detect_median_s"], "%.0f"),
                              fmt(r["detect_max_s"], "%.0f"), r["bound_s"])),
    ("calls/dom/iv", 12, lambda r: "%.2f" % r["calls_per_dom_interval"]),
    ("peak calls", 10, lambda r: "%d" % r["peak_in_flight"]),
    ("commits/iv", 10, lambda r: "%.1f" % r["commits_per_interval"]),
    ("sel/verdict", 11, lambda r: fmt(r["selects_per_verdict"], "%.2f")),
    ("backlog n/oldest s/log", 22, lambda r: "%d/%.1f/%d" % (
        r["backlog_in_status"], r.get("backlog_oldest_s", 0), r["backlog_log_lines"])),
]


def table(results: list[dict[str, Any]]) -> list[str]:
    out = ["  ".join(name.rjust(width) for name, width, _ in COLUMNS)]
    for r in results:
        out.append("  ".join(get(r).rjust(width) for _, width, get in COLUMNS))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: N=100 at 0 and 10 %% hung, interval 3 s, timeout 1 s")
    ap.add_argument("--n", type=int, action="append", help="guests (repeatable)")
    ap.add_argument("--hung", type=int, action="append", help="percent hung (repeatable)")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--threshold", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0,
                    help="probe_workers (default: the option's default)")
    ap.add_argument("--max-client-requests", type=int, default=5,
                    help="calls the simulated libvirtd serves at once (0: no limit)")
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--label", default="", help="a note on the code measured, for the report")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.n, args.hung = args.n[0], args.hung[0]
        print(json.dumps(run_one(args)), flush=True)
        return 0
    if args.quick:
        configs = [(100, 0), (100, 10)]
        args.interval, args.timeout = 3.0, 1.0
    elif args.n or args.hung:
        configs = [(n, h) for n in (args.n or [1000]) for h in (args.hung or [0, 1, 10])]
    else:
        configs = FULL
    report = ["machine"] + ["  " + line for line in machine_lines(args.label)]
    results = []
    began = time.monotonic()
    for n, h in configs:
        progress("N=%d, %d%% hung" % (n, h))
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--hung", str(h),
               "--interval", str(args.interval), "--timeout", str(args.timeout),
               "--threshold", str(args.threshold), "--workers", str(args.workers),
               "--max-client-requests", str(args.max_client_requests)]
        child = subprocess.run(cmd, capture_output=True, text=True, check=False,
                               timeout=30 * args.interval + 120)
        lines = child.stdout.strip().splitlines()
        if child.returncode or not lines:
            progress("failed (exit %d): %s" % (child.returncode, child.stderr[-2000:]))
            return 1
        results.append(json.loads(lines[-1]))
        progress("  " + table(results[-1:])[1].strip())
    report += ["", "interval %g s, timeout %g s, failure threshold %d, simulated libvirtd "
               "serves %s calls at once; healthy guest answers in 3 ms"
               % (args.interval, args.timeout, args.threshold,
                  args.max_client_requests or "unlimited"), ""]
    report += table(results)
    report += ["", "non-agent calls in the window (kind: count):"]
    for r in results:
        report.append("  N=%d %d%%: %s" % (r["n"], r["hung_pct"], ", ".join(
            "%s %d" % kv for kv in sorted(r["other_calls"].items())) or "none"))
    examples = [r["backlog_log_example"] for r in results if r["backlog_log_example"]]
    if examples:
        report += ["", "a backlog log line: " + examples[-1]]
    report += ["", "run took %.0f s; load after: %.2f %.2f %.2f"
               % ((time.monotonic() - began,) + os.getloadavg())]
    print("\n".join(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
