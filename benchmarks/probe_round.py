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
   ``Hypervisor.set_agent_timeout`` (libvirt's agent response timeout).

Run as root from the repository root (the testbed needs it):

    PYTHONPATH=tools .venv/bin/python benchmarks/probe_round.py

The report goes to stdout, progress to stderr. Everything listens on
127.0.0.1 and is torn down at the end; the work directory is kept (and
named on stderr) only when the run fails.
"""
from __future__ import annotations

import argparse
import contextlib
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
from pathlib import Path

import libvirt
import libvirt_qemu
from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.db import Database
from masakarimonitors_iim.hypervisor.calls import Hypervisor
from masakarimonitors_iim.hypervisor.types import AgentError
from masakarimonitors_iim.monitor import Monitor
from masakarimonitors_iim.monitor.settings import settings_from_conf
from masakarimonitors_iim.notifier.log import LogNotifier
from masakarimonitors_iim.prober import Prober, RoundOutcome, RoundSpec
from masakarimonitors_iim.verdict import Verdict
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
        self.step(wait=False)
        with p.cv:
            if not p.cv.wait_for(lambda: len(p.posted) >= self.expected, timeout=120):
                raise RuntimeError("only %d of %d verdicts within 120 s"
                                   % (len(p.posted), self.expected))
            posted, order = dict(p.posted), list(p.order)
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
    args = ap.parse_args()
    ks = [int(k) for k in args.frozen.split(",")]
    if ks != sorted(ks) or ks[-1] >= args.guests:
        ap.error("--frozen must increase and stay below --guests")

    base = Path(tempfile.mkdtemp(prefix="iim-bench-"))
    logging.basicConfig(filename=str(base / "monitor.log"), level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(levelname)s %(name)s %(message)s")
    tb = Testbed(base / "testbed")
    hv: Hypervisor | None = None
    monitors: list[TimedMonitor] = []
    pools: list[WorkerPool] = []
    ok = False
    began = time.monotonic()
    load_before = os.getloadavg()
    try:
        progress("testbed setup + start in %s" % base)
        tb.setup()
        tb.start()
        names = ["bench-%d" % i for i in range(args.guests)]
        uuids = {name: tb.create_guest(name) for name in names}
        for name in names:
            tb.wait_agent(name)
        names_of = {u: n for n, u in uuids.items()}
        progress("%d guests answer guest-ping" % len(names))

        hv = Hypervisor(tb.libvirt_uri)
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
            pools.append(pool)
            mon = TimedMonitor(conf, hv, pool, journal, expected=len(names))
            mon.results.recover()
            mon.one_round()  # warm-up: first inventory, set_agent_timeout, guest-info
            monitors.append(mon)
        # Freeze in the serial sweep's order: the first domains swept are frozen.
        _, _, sweep_order = monitors[0].one_round()
        frozen: list[str] = []
        rows = []
        unexpected = []
        for k in ks:
            while len(frozen) < k:
                uuid = sweep_order[len(frozen)]
                progress("freezing qemu-ga in %s" % names_of[uuid])
                tb.freeze_agent(names_of[uuid])
                frozen.append(uuid)
            for (label, _), mon in zip(sweeps, monitors):
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

        report += ["", "run took %.0f s before teardown; load avg after: %.2f %.2f %.2f"
                   % ((time.monotonic() - began,) + os.getloadavg())]
        if unexpected:
            report += ["", "UNEXPECTED VERDICTS (figures above are not valid):"]
            report += ["  " + line for line in unexpected]
        print("\n".join(report), flush=True)
        ok = not unexpected
    finally:
        for pool in pools:
            pool.stop(2.0)
        for mon in monitors:
            mon.stop()  # never start()ed: only closes its journal
        if hv is not None:
            hv.stop()
        progress("stopping the testbed")
        tb.stop()
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            progress("work directory kept: %s" % base)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
