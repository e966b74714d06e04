"""Probe-round benchmark on the real testbed: prints figures, asserts nothing.

What it measures, with the project's own code (``Hypervisor``, ``Monitor``,
``WorkerPool``, the ``ping`` probe) against real QEMU guests running qemu-ga
under a private libvirtd (``tools/testbed``):

1. guest-ping latency through ``Hypervisor.agent_command`` on healthy guests;
2. a probe round over N guests with K of them frozen (qemu-ga SIGSTOPped),
   for a serial sweep (the Monitor with ``probe_workers = 1``: one domain
   after another, as upstream masakari-monitors does) and for the bounded
   pool (``probe_workers = 4``, the default): the round's wall time and the
   time until the last healthy guest's verdict. Frozen guests are put first
   in the sweep order: the worst case for a serial sweep;
3. the cost of one call to a frozen agent, before and after
   ``Hypervisor.set_agent_timeout`` (libvirt's agent response timeout);
4. detection: the real Monitor, built from the configuration and started
   as the daemon runs it (interval 10 s, timeout 2 s, failure threshold 3:
   bound 32 s), on fresh guests: the seconds from a freeze to the verdict
   that brought the failure streak to the threshold, for one frozen guest,
   then, under a fresh monitor, for three frozen at once; and whether the
   healthy guests' verdicts kept coming every interval meanwhile.

Run as root from the repository root (the testbed needs it):

    PYTHONPATH=tools .venv/bin/python benchmarks/probe_round.py [--detection-only]

The report goes to stdout, progress to stderr. Everything listens on
127.0.0.1 and is torn down at the end; the work directory is kept (and
named on stderr) only when the run fails.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt
import libvirt_qemu
from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.hypervisor.calls import Hypervisor
from masakarimonitors_iim.hypervisor.types import AgentError
from masakarimonitors_iim.journal.machine import Thresholds
from masakarimonitors_iim.monitor import Monitor
from masakarimonitors_iim.monitor.results import JournalWriter
from masakarimonitors_iim.monitor.settings import settings_from_conf
from masakarimonitors_iim.monitor.wiring import build_monitor
from masakarimonitors_iim.notifier.log import LogNotifier
from masakarimonitors_iim.prober import Prober, RoundOutcome, RoundSpec
from masakarimonitors_iim.verdict import ProbeResult, Verdict
from masakarimonitors_iim.workers import WorkerPool

from testbed import Testbed  # PYTHONPATH=tools
from testbed.libvirtd import LIBVIRTD

GROUP = "introspectiveinstancemonitor"


def progress(msg: str) -> None:
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# -- the machine ----------------------------------------------------------------

def _first(path: str, key: str) -> str:
    with open(path) as f:
        for line in f:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_lines(tb: Testbed, guest: str) -> list[str]:
    out = subprocess.run(["virsh", "-c", tb.libvirt_uri, "version"], capture_output=True,
                         text=True, check=False).stdout
    versions = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    daemon = subprocess.run([LIBVIRTD, "--version"], capture_output=True, text=True,
                            check=False).stdout.strip()
    mem_kib = int(_first("/proc/meminfo", "MemTotal").split()[0])
    pid = tb.qemu_pid(guest)
    cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0") if pid else []
    accel = next((value.decode() for flag, value in zip(cmdline, cmdline[1:])
                  if flag == b"-accel"), "?")
    cpu_flags = _first("/proc/cpuinfo", "flags").split()
    return [
        "date:     %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu:      %s" % _first("/proc/cpuinfo", "model name"),
        "nproc:    %d (usable: %d)" % (os.cpu_count() or 0, len(os.sched_getaffinity(0))),
        "memory:   %.1f GiB" % (mem_kib / 1024 / 1024),
        "kernel:   %s %s" % (platform.system(), platform.release()),
        "libvirt:  %s; client %s" % (daemon, versions.get("Using library", "?").strip()),
        "qemu:     %s" % versions.get("Running hypervisor", "?").strip(),
        "accel:    TCG (no KVM): domain type 'qemu', QEMU -accel %s, CPU has %s"
        % (accel, "vmx/svm" if {"vmx", "svm"} & set(cpu_flags) else "no vmx/svm"),
        "python:   %s" % platform.python_version(),
    ]


# -- the monitor, instrumented ----------------------------------------------------

class ShiftedClock:
    """time.monotonic() plus an offset: advancing it makes every domain due
    without sleeping through the probe interval."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class TimedProber(Prober):
    """The real Prober; records when each domain's verdict is ready on its
    worker, which is when the scheduler is handed it."""

    def __init__(self, hv: Hypervisor, clock: ShiftedClock) -> None:
        super().__init__(hv, clock)
        self.posted: dict[str, tuple[float, Verdict, str]] = {}
        self.order: list[str] = []
        self.cv = threading.Condition()

    def run(self, spec: RoundSpec) -> RoundOutcome:
        outcome = super().run(spec)
        if outcome.recheck:
            # a quick first call unanswered: the re-probe brings the verdict
            return outcome
        with self.cv:
            self.posted[spec.uuid] = (time.monotonic(), outcome.result.verdict,
                                      outcome.result.reason)
            self.order.append(spec.uuid)
            self.cv.notify_all()
        return outcome


class TimedMonitor(Monitor):
    """The real Monitor with a TimedProber; runs one round on demand."""

    def __init__(self, conf: cfg.ConfigOpts, hv: Hypervisor, pool: WorkerPool,
                 journal: Path, expected: int) -> None:
        self.clock = ShiftedClock()
        self.expected = expected
        self.prober = TimedProber(hv, self.clock)
        settings = settings_from_conf(conf)
        super().__init__(settings, hypervisor=hv, db=Database(str(journal)),
                         notifier=LogNotifier(conf), pool=pool, clock=self.clock,
                         wall=time.time, prober=self.prober, spread=lambda: 0.0)

    def one_round(self) -> tuple[float, dict[str, tuple[float, Verdict, str]], list[str]]:
        """Make every domain due, run one scheduler step (inventory refresh,
        submit to the pool), wait for all verdicts, apply them. Returns the
        round's start time, {uuid: (posted at, verdict, reason)} and the
        order in which verdicts came."""
        self.clock.offset += self.settings.defaults.interval
        p = self.prober
        with p.cv:
            p.posted, p.order = {}, []
        start = time.monotonic()
        deadline = start + 120
        while True:
            # Each step starts the rounds its free agent slots allow (and
            # re-probes); the scheduler thread would wake for the same.
            self.step(wait=False)
            with p.cv:
                if len(p.posted) >= self.expected:
                    posted, order = dict(p.posted), list(p.order)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("only %d of %d verdicts within 120 s"
                                       % (len(p.posted), self.expected))
                p.cv.wait(0.005)
        self.step(wait=False)  # apply the verdicts to the journal
        return start, posted, order


def make_conf(uri: str, workers: int, timeout: float, journal: Path) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    conf.set_override("hostname", "iim-testbed-host")
    conf.set_override("connection_uri", uri, group="libvirt")
    conf.set_override("journal_path", str(journal), group=GROUP)
    conf.set_override("probe_workers", workers, group=GROUP)
    conf.set_override("guest_monitoring_timeout", timeout, group=GROUP)
    conf.set_override("notifier", "log", group=GROUP)  # never sent: no sender thread
    iim_conf.validate(conf)
    return conf


# -- figures ----------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def ms(seconds: float) -> str:
    return "%.1f ms" % (seconds * 1000)


def span(values: list[float]) -> str:
    """median (min-max), in seconds."""
    return "%6.3f s (%.3f-%.3f)" % (statistics.median(values), min(values), max(values))


@dataclasses.dataclass
class Held:
    """What sections 1-3 started, stopped by main whatever happens."""

    hv: Hypervisor | None = None
    monitors: list[TimedMonitor] = dataclasses.field(default_factory=list)
    pools: list[WorkerPool] = dataclasses.field(default_factory=list)


def probe_rounds(tb: Testbed, args: argparse.Namespace, ks: list[int], base: Path,
                 load_before: tuple[float, float, float],
                 held: Held) -> tuple[list[str], list[str]]:
    """Sections 1-3 on their own guests; returns the report lines and the
    unexpected verdicts."""
    names = ["bench-%d" % i for i in range(args.guests)]
    uuids = {name: tb.create_guest(name) for name in names}
    for name in names:
        tb.wait_agent(name)
    names_of = {u: n for n, u in uuids.items()}
    progress("%d guests answer guest-ping" % len(names))

    hv = held.hv = Hypervisor(tb.libvirt_uri)
    hv.start()
    if not hv.wait_connected(30):
        raise RuntimeError("no libvirt connection")

    report = ["machine"] + ["  " + line for line in machine_lines(tb, names[0])]
    report.append("  load avg before the run: %.2f %.2f %.2f" % load_before)

    # 1. healthy guest-ping latency, sequential calls round-robin over the guests
    for name in names:  # one unmeasured call each
        hv.agent_command(uuids[name], "guest-ping", None, args.timeout)
    lat = []
    for i in range(args.pings):
        uuid = uuids[names[i % len(names)]]
        t = time.perf_counter()
        hv.agent_command(uuid, "guest-ping", None, args.timeout)
        lat.append(time.perf_counter() - t)
    # Reference, not the project's code: the bare libvirt call on a held
    # virDomain (agent_command also looks the domain up: one more RPC).
    raw = []
    with contextlib.closing(libvirt.open(tb.libvirt_uri)) as conn:
        doms = [conn.lookupByUUIDString(uuids[name]) for name in names]
        ping = '{"execute": "guest-ping"}'
        for i in range(args.pings):
            t = time.perf_counter()
            libvirt_qemu.qemuAgentCommand(doms[i % len(doms)], ping, 2, 0)
            raw.append(time.perf_counter() - t)
    report += ["", "guest-ping on healthy guests (%d sequential calls, round-robin over "
               "%d guests)" % (args.pings, len(names)),
               "  %-48s median %s   p95 %s   max %s"
               % ("Hypervisor.agent_command (lookup + command):",
                  ms(statistics.median(lat)), ms(pct(lat, 95)), ms(max(lat))),
               "  %-48s median %s   p95 %s   max %s"
               % ("reference: bare qemuAgentCommand, held domain:",
                  ms(statistics.median(raw)), ms(pct(raw, 95)), ms(max(raw)))]
    progress("latency done")

    # 2. probe rounds: serial sweep vs the pool, K guests frozen
    sweeps = [("serial (1 worker)", 1), ("pool (%d workers)" % args.workers, args.workers)]
    for label, workers in sweeps:
        journal = base / ("journal-%d.sqlite" % workers)
        conf = make_conf(tb.libvirt_uri, workers, args.timeout, journal)
        pool = WorkerPool(workers)
        pool.start()
        held.pools.append(pool)
        mon = TimedMonitor(conf, hv, pool, journal, expected=len(names))
        mon.results.recover()
        mon.one_round()  # warm-up: first inventory, set_agent_timeout, guest-info
        held.monitors.append(mon)
    # Freeze in the serial sweep's order: the first domains swept are frozen.
    _, _, sweep_order = held.monitors[0].one_round()
    frozen: list[str] = []
    rows = []
    unexpected = []
    for k in ks:
        while len(frozen) < k:
            uuid = sweep_order[len(frozen)]
            progress("freezing qemu-ga in %s" % names_of[uuid])
            tb.freeze_agent(names_of[uuid])
            frozen.append(uuid)
        for (label, _), mon in zip(sweeps, held.monitors):
            walls, last_healthy = [], []
            for _ in range(args.rounds):
                start, posted, _ = mon.one_round()
                for uuid, (_, verdict, reason) in posted.items():
                    want = Verdict.FAILED if uuid in frozen else Verdict.HEALTHY
                    if verdict is not want:
                        unexpected.append("K=%d %s %s: %s (%s), expected %s"
                                          % (k, label, names_of[uuid], verdict.value,
                                             reason, want.value))
                walls.append(max(t for t, _, _ in posted.values()) - start)
                last_healthy.append(max(t for u, (t, _, _) in posted.items()
                                        if u not in frozen) - start)
            rows.append((k, label, walls, last_healthy))
        progress("rounds with %d frozen done" % k)
    report += ["", "probe round over %d guests (Monitor.step, ping probe, timeout %g s; "
               "frozen guests first in the sweep; median (min-max) of %d rounds)"
               % (len(names), args.timeout, args.rounds),
               "  %-6s  %-18s  %-26s  %s" % ("frozen", "sweep", "round wall time",
                                             "last healthy guest's verdict")]
    for k, label, walls, last_healthy in rows:
        report.append("  %-6d  %-18s  %-26s  %s" % (k, label, span(walls),
                                                    span(last_healthy)))

    # 3. one frozen agent, per call, before and after set_agent_timeout. A
    # fresh guest: the monitors above already set the timeout on theirs.
    fuuid = tb.create_guest("bench-frozen")
    tb.wait_agent("bench-frozen")
    tb.freeze_agent("bench-frozen")  # its own last check (virsh, 1 s) timed out

    def frozen_calls() -> list[str]:
        out = []
        for _ in range(args.frozen_calls):
            t = time.monotonic()
            try:
                hv.agent_command(fuuid, "guest-ping", None, args.timeout)
                kind = "answered"
            except AgentError as exc:
                kind = exc.kind.name
            out.append("%.2f s (%s)" % (time.monotonic() - t, kind))
        return out

    without = frozen_calls()
    hv.set_agent_timeout(fuuid, args.timeout)
    with_ = frozen_calls()
    report += ["", "a frozen agent, guest-ping with a %g s call timeout, per call"
               % args.timeout,
               "  without set_agent_timeout (libvirt default): " + ", ".join(without),
               "  after set_agent_timeout(%g s):               " % args.timeout
               + ", ".join(with_)]
    progress("frozen-agent calls done")
    return report, unexpected


# -- 4. detection by the real, started Monitor --------------------------------------

DETECT_INTERVAL = 10
DETECT_THRESHOLD = 3
#: ``Testbed.freeze_agent`` runs ``sleep 0.3; killall -STOP qemu-ga`` in the
#: guest: the agent cannot stop sooner than this after the request, so a
#: detection time counted from request + KILL_DELAY may overstate, never flatter.
KILL_DELAY = 0.3
#: A healthy guest's verdicts are on time while no two are further apart
#: than the interval plus this.
ON_TIME_SLACK = 1.0


class VerdictLog:
    """Every verdict the monitor's journal writer applies (on the scheduler
    thread) and the journal state it left, so detection is read from the
    monitor itself, not from polling its status."""

    def __init__(self, writer: JournalWriter) -> None:
        self.rows: list[tuple[float, str, Verdict, str]] = []
        self._lock = threading.Lock()
        self._writer = writer
        self._apply = writer.verdict
        writer.verdict = self  # type: ignore[method-assign]

    def __call__(self, uuid: str, name: str, result: ProbeResult,
                 thresholds: Thresholds) -> None:
        at = time.monotonic()
        self._apply(uuid, name, result, thresholds)
        rec = self._writer.record(uuid)
        with self._lock:
            self.rows.append((at, uuid, result.verdict, rec.state.value if rec else ""))

    def wait(self, until: Callable[[list[tuple[float, str, Verdict, str]]], bool],
             timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                rows = list(self.rows)
            if until(rows):
                return True
            time.sleep(0.1)
        return False


def freeze_now(tb: Testbed, name: str) -> float:
    """Freeze a guest's agent; the earliest monotonic time it can have stopped."""
    requested = time.monotonic()
    tb.freeze_agent(name)
    return requested + KILL_DELAY


def detection_run(tb: Testbed, args: argparse.Namespace, base: Path, run: int,
                  uuids: dict[str, str], frozen: list[str]) -> tuple[list[str], list[str]]:
    """A fresh monitor (own journal) over the running guests ``uuids``;
    once all are HEALTHY, ``frozen`` are frozen at once. Returns a report
    line per frozen guest, one for the healthy ones, and what went wrong."""
    journal = base / ("detect-%d.sqlite" % run)
    conf = make_conf(tb.libvirt_uri, args.workers, args.timeout, journal)
    conf.set_override("guest_monitoring_interval", DETECT_INTERVAL, group=GROUP)
    conf.set_override("guest_monitoring_failure_threshold", DETECT_THRESHOLD, group=GROUP)
    # Above the guest count: the storm guard never holds a report here.
    conf.set_override("storm_min_domains", len(uuids) + 1, group=GROUP)
    iim_conf.validate(conf)
    bound = DETECT_THRESHOLD * DETECT_INTERVAL + args.timeout
    mon = build_monitor(conf)
    log = VerdictLog(mon.results)
    mon.start()
    try:
        if not log.wait(lambda rows: {u for _, u, _, s in rows if s == "HEALTHY"}
                        >= set(uuids.values()), 60):
            raise RuntimeError("run %d: not every guest HEALTHY within 60 s" % run)
        # Past the first rounds (spread over the next interval): steady state.
        time.sleep(DETECT_INTERVAL)
        with ThreadPoolExecutor(len(frozen)) as pool:
            futures = {name: pool.submit(freeze_now, tb, name) for name in frozen}
            frozen_at = {name: done.result() for name, done in futures.items()}
        progress("run %d: froze %s" % (run, ", ".join(frozen)))
        hung = {uuids[name] for name in frozen}
        log.wait(lambda rows: {u for t, u, _, s in rows if s == "REPORTED"} >= hung,
                 bound + 60)
        # One more interval, for the healthy guests' cadence after the reports.
        time.sleep(DETECT_INTERVAL)
        ended = time.monotonic()
    finally:
        mon.stop()
    rows = list(log.rows)
    lines, problems = [], []
    together = "%d of %d%s" % (len(frozen), len(uuids), " at once" if len(frozen) > 1 else "")
    for name in frozen:
        since = frozen_at[name] - KILL_DELAY
        mine = [(t, v, s) for t, u, v, s in rows if u == uuids[name] and t >= since]
        failed = ", ".join("%.1f" % (t - frozen_at[name]) for t, v, _ in mine
                           if v is Verdict.FAILED)
        reported = next((t for t, _, s in mine if s == "REPORTED"), None)
        if reported is None:
            lines.append("  %-3d  %-14s  %-9s  NOT REPORTED within %.0f s; FAILED at %s"
                         % (run, together, name, bound + 60, failed))
            problems.append("run %d: %s not reported" % (run, name))
            continue
        took = reported - frozen_at[name]
        within = took <= bound + 1
        lines.append("  %-3d  %-14s  %-9s  %8.2f s          %-11s  %s"
                     % (run, together, name, took, "yes" if within else "NO", failed))
        if not within:
            problems.append("run %d: %s detected after %.2f s, bound + 1 s = %g s"
                            % (run, name, took, bound + 1))
    start = min(frozen_at.values()) - KILL_DELAY - DETECT_INTERVAL
    healthy = {u: n for n, u in uuids.items() if n not in frozen}
    gaps, count, bad = [], 0, []
    for uuid, name in healthy.items():
        times = [t for t, u, _, _ in rows if u == uuid and start <= t <= ended]
        count += len(times)
        bad += ["%s %s" % (name, v.value) for t, u, v, _ in rows
                if u == uuid and start <= t <= ended and v is not Verdict.HEALTHY]
        before = [t for t, u, _, _ in rows if u == uuid and t < start][-1:]
        gaps += [b - a for a, b in zip(before + times, times + [ended])]
    longest = max(gaps) if gaps else float("inf")
    on_time = longest <= DETECT_INTERVAL + ON_TIME_SLACK and not bad
    lines.append("       healthy: %d guests, %d verdicts from %d s before the freeze to %d s "
                 "after the last report, %s; longest gap %.2f s (interval %d s): %s"
                 % (len(healthy), count, DETECT_INTERVAL, DETECT_INTERVAL,
                    "not HEALTHY: " + ", ".join(bad) if bad else "all HEALTHY", longest,
                    DETECT_INTERVAL, "on time" if on_time else "LATE"))
    if not on_time:
        problems.append("run %d: healthy guests' verdicts %s" % (
            run, "not HEALTHY" if bad else "late (gap %.2f s)" % longest))
    return lines, problems


def detection(tb: Testbed, args: argparse.Namespace, base: Path,
              load_before: tuple[float, float, float],
              header: bool) -> tuple[list[str], list[str]]:
    """Section 4 on its own guests (any earlier ones are destroyed first:
    the monitor watches every running domain): one frozen of 6, then, on
    a fresh monitor without that guest, 3 of the other 5 frozen at once."""
    with contextlib.closing(libvirt.open(tb.libvirt_uri)) as conn:
        earlier = [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
    with ThreadPoolExecutor(max(1, len(earlier))) as pool:
        list(pool.map(tb.destroy, earlier))
    names = ["detect-%d" % i for i in range(6)]
    uuids = {name: tb.create_guest(name) for name in names}
    for name in names:
        tb.wait_agent(name)
    progress("detection: %d guests answer guest-ping" % len(names))
    report = []
    if header:
        report += ["machine"] + ["  " + line for line in machine_lines(tb, names[0])]
        report.append("  load avg before the run: %.2f %.2f %.2f" % load_before)
    bound = DETECT_THRESHOLD * DETECT_INTERVAL + args.timeout
    report += ["", "detection by the real Monitor (build_monitor + start: scheduler, %d probe "
               "workers, journal, Hypervisor), ping probe, interval %d s, timeout %g s, "
               "failure_threshold %d:" % (args.workers, DETECT_INTERVAL, args.timeout,
                                         DETECT_THRESHOLD),
               "bound %d x %d + %g = %g s, target bound + 1 s = %g s; a freeze is timed from "
               "its request + %.1f s (the kill's own delay in the guest)"
               % (DETECT_THRESHOLD, DETECT_INTERVAL, args.timeout, bound, bound + 1, KILL_DELAY),
               "  run  frozen          guest      freeze -> reported  within %g s  "
               "FAILED verdicts at (s after freeze)" % (bound + 1)]
    lines, problems = detection_run(tb, args, base, 1, uuids, names[:1])
    report += lines
    tb.destroy(names[0])  # hung for good: off the second monitor's books
    lines, more = detection_run(tb, args, base, 2, {n: uuids[n] for n in names[1:]}, names[1:4])
    report += lines
    progress("detection done")
    return report, problems + more


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guests", type=int, default=6)
    ap.add_argument("--frozen", default="0,1,2,4",
                    help="comma-separated K values (frozen guests), increasing")
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds per (K, sweep)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=2.0,
                    help="guest_monitoring_timeout, seconds")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--frozen-calls", type=int, default=3)
    ap.add_argument("--detection-only", action="store_true",
                    help="run only section 4 (detection by the started Monitor)")
    args = ap.parse_args()
    ks = [int(k) for k in args.frozen.split(",")]
    if ks != sorted(ks) or ks[-1] >= args.guests:
        ap.error("--frozen must increase and stay below --guests")

    base = Path(tempfile.mkdtemp(prefix="iim-bench-"))
    logging.basicConfig(filename=str(base / "monitor.log"), level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(levelname)s %(name)s %(message)s")
    tb = Testbed(base / "testbed")
    held = Held()
    ok = False
    began = time.monotonic()
    load_before = os.getloadavg()
    try:
        progress("testbed setup + start in %s" % base)
        tb.setup()
        tb.start()
        report: list[str] = []
        unexpected: list[str] = []
        if not args.detection_only:
            report, unexpected = probe_rounds(tb, args, ks, base, load_before, held)
        lines, problems = detection(tb, args, base, load_before, header=not report)
        report += lines

        report += ["", "run took %.0f s before teardown; load avg after: %.2f %.2f %.2f"
                   % ((time.monotonic() - began,) + os.getloadavg())]
        if unexpected:
            report += ["", "UNEXPECTED VERDICTS (figures above are not valid):"]
            report += ["  " + line for line in unexpected]
        if problems:
            report += ["", "DETECTION FINDINGS (figures above):"]
            report += ["  " + line for line in problems]
        print("\n".join(report), flush=True)
        ok = not unexpected and not problems
    finally:
        for pool in held.pools:
            pool.stop(2.0)
        for mon in held.monitors:
            mon.stop()  # never start()ed: only closes its journal
        if held.hv is not None:
            held.hv.stop()
        progress("stopping the testbed")
        tb.stop()
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            progress("work directory kept: %s" % base)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
