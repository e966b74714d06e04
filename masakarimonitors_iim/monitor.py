"""Wiring and the scheduling loop.

Data flows one way: libvirt events and the domain list feed the
scheduler; workers run probes and hand back a verdict; the scheduler
thread alone applies verdicts and events to the journal (so journal
writes need no locking and never race with each other), and writes the
outbox row in the same transaction; the sender delivers it.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Any, Callable

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import driver

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim import policy as policy_mod
from masakarimonitors_iim import status
from masakarimonitors_iim import verdict as verdict_mod
from masakarimonitors_iim.conf import options
from masakarimonitors_iim.hypervisor.connection import Hypervisor
from masakarimonitors_iim.hypervisor.types import (
    AgentError, DomainInfo, DomainState, ErrorKind, EventKind, HypervisorUnavailable,
    LifecycleEvent)
from masakarimonitors_iim.journal import machine
from masakarimonitors_iim.journal.store import JournalStore
from masakarimonitors_iim.notifier import base as notifier_base
from masakarimonitors_iim.notifier.sender import Sender
from masakarimonitors_iim.probes import base as probes_base
from masakarimonitors_iim.probes import capabilities
from masakarimonitors_iim.verdict import ProbeResult, Verdict
from masakarimonitors_iim.workers import WorkerPool

LOG = logging.getLogger(__name__)

DELIVERED_RETENTION = 7 * 24 * 3600   # seconds a delivered notification stays visible
PRUNE_EVERY = 3600.0
MIN_PROBE_TIME = 1.0
INVENTORY_RETRY = 1.0

#: A new boot: the guest must prove itself healthy again (DISCOVERY).
RESTART_EVENTS = {EventKind.STARTED, EventKind.REBOOTED}
STOP_EVENTS = {EventKind.STOPPED, EventKind.SHUTDOWN, EventKind.CRASHED}
#: guest-info refused this way says nothing about what the probes may use:
#: run them, they turn a blocked RPC into UNKNOWN themselves.
GUEST_INFO_REFUSED = {ErrorKind.COMMAND_DISABLED, ErrorKind.COMMAND_NOT_FOUND,
                      ErrorKind.COMMAND_FAILED}


@dataclasses.dataclass
class Watched:
    """Runtime-only facts about one monitored domain (the journal holds
    the durable ones)."""

    info: DomainInfo
    policy: policy_mod.EffectivePolicy
    probes: list[probes_base.Probe]
    probe_error: str = ""
    next_due: float = 0.0
    in_flight: bool = False
    generation: int = 0          # bumped on restart: stale results are dropped
    started_at: float = 0.0      # monotonic, for the startup grace
    #: probe name -> the UNKNOWN result it gives instead of running, because
    #: the guest's qemu-ga blocks an RPC it needs (from guest-info)
    blocked: dict[str, ProbeResult] = dataclasses.field(default_factory=dict)
    capabilities_checked: bool = False
    last_result: ProbeResult | None = None
    #: monotonic time until which "agent not connected" is UNKNOWN, not
    #: FAILED: the agent disconnects first when a guest shuts down or
    #: reboots, and a boot the monitor did not see (it was down, or libvirt
    #: was) looks the same. Cleared when the agent answers.
    disconnect_grace_until: float = 0.0


@dataclasses.dataclass(frozen=True)
class Round:
    """What a worker hands back: a verdict plus what it learnt, applied to
    the domain's runtime state on the scheduler thread only."""

    result: ProbeResult
    agent_answered: bool = False
    #: set when this round read guest-info: probe name -> UNKNOWN result
    blocked: dict[str, ProbeResult] | None = None


def defaults_from_conf(conf: cfg.ConfigOpts) -> policy_mod.Defaults:
    group = conf[options.IIM_GROUP]
    return policy_mod.Defaults(
        interval=float(group.guest_monitoring_interval),
        timeout=float(group.guest_monitoring_timeout),
        failure_threshold=group.guest_monitoring_failure_threshold,
        success_threshold=group.guest_monitoring_success_threshold,
        startup_grace=float(group.guest_monitoring_startup_grace),
    )


def load_notifier(conf: cfg.ConfigOpts) -> notifier_base.Notifier:
    name = conf[options.IIM_GROUP].notifier
    return driver.DriverManager(notifier_base.NAMESPACE, name, invoke_on_load=True,
                                invoke_args=(conf,)).driver


def _worth_saving(old: machine.Record, new: machine.Record) -> bool:
    """Skip the fsync when a healthy guest stays healthy: only the success
    counter and timestamps moved, and losing them on a crash changes no
    decision (a HEALTHY record needs no success streak)."""
    if new.state is not machine.State.HEALTHY or old.state is not machine.State.HEALTHY:
        return new != old
    keys = ("failures", "episode", "last_verdict", "last_reason")
    return any(getattr(old, k) != getattr(new, k) for k in keys)


class Monitor:
    """The introspective instance monitor: start(), then stop() or reload()."""

    def __init__(self, conf: cfg.ConfigOpts, *,
                 hypervisor: Hypervisor | None = None,
                 store: JournalStore | None = None,
                 notifier: notifier_base.Notifier | None = None,
                 pool: WorkerPool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.conf = conf
        group = conf[options.IIM_GROUP]
        self._clock = clock
        self._wall = wall
        self._hostname = iim_conf.hostname(conf)
        self._events: queue.Queue[Callable[[], None]] = queue.Queue()
        self._hv = hypervisor or Hypervisor(conf.libvirt.connection_uri,
                                            on_event=self.handle_event)
        self._store = store or JournalStore(group.journal_path)
        self._status_path = status.status_path(group.journal_path)
        self._sender = Sender(self._store, notifier or load_notifier(conf),
                              retry_interval=conf.callback.retry_interval,
                              retry_max=conf.callback.retry_max,
                              max_backoff=conf.callback.max_retry_interval,
                              duplicate_window=conf.callback.duplicate_window)
        self._pool = pool or WorkerPool(group.probe_workers)
        self._defaults = defaults_from_conf(conf)
        self._disconnect_grace = float(group.agent_disconnect_grace)
        self._policy_file = self._load_policy_file(initial=True)
        self._watched: dict[str, Watched] = {}
        self._unmonitored: dict[str, str] = {}   # uuid -> why (shown in status)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._inventory_due = 0.0
        self._prune_due = 0.0
        self._thread: threading.Thread | None = None
        self._last_inventory_error = ""
        self._last_loop_error = ""

    # -- life cycle ---------------------------------------------------------
    def start(self) -> None:
        LOG.info("starting: host %s, libvirt %s, journal %s, %d probe workers",
                 self._hostname, self.conf.libvirt.connection_uri,
                 self.conf[options.IIM_GROUP].journal_path,
                 self.conf[options.IIM_GROUP].probe_workers)
        if (self.conf[options.IIM_GROUP].qemu_guest_agent_sock_path
                != options.UPSTREAM_SOCK_PATH):
            LOG.warning("[%s] qemu_guest_agent_sock_path is set but not used: "
                        "domains are found by their agent channel name",
                        options.IIM_GROUP)
        self._sender.start()
        self._pool.start()
        self._hv.start()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 4.0) -> None:
        """Stop everything within ``timeout`` seconds (SIGTERM allows 5)."""
        if self._stop.is_set():
            return
        if self._thread is None:     # never started: only the journal is open
            self._stop.set()
            self._store.close()
            return
        LOG.info("stopping")
        deadline = self._clock() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.1, deadline - self._clock()) / 2)
        for w in list(self._watched.values()):
            self._close_probes(w)       # before libvirt goes: they talk to guests
        self._pool.stop(max(0.1, (deadline - self._clock()) / 2))
        self._sender.stop(max(0.1, (deadline - self._clock()) / 2))
        self._hv.stop(max(0.1, deadline - self._clock()))
        self._store.close()
        LOG.info("stopped")

    def reload(self) -> None:
        """SIGHUP: re-read the policy file; an invalid one leaves the
        policy in force unchanged."""
        self._events.put(self._apply_reload)
        self._wake.set()

    # -- inputs from other threads ------------------------------------------
    def handle_event(self, event: LifecycleEvent) -> None:
        """Called on libvirt's event thread: only queue, never block it."""
        self._events.put(lambda: self._apply_event(event))
        self._wake.set()

    def _post_result(self, w: Watched, generation: int, outcome: Round) -> None:
        self._events.put(lambda: self._apply_result(w, generation, outcome))
        self._wake.set()

    # -- the scheduler thread -----------------------------------------------
    def _loop(self) -> None:
        self.recover_journal()
        while not self._stop.is_set():
            try:
                self.step()
                if self._last_loop_error:
                    LOG.info("scheduler works again")
                    self._last_loop_error = ""
            except Exception as exc:
                # One bad iteration must not stop monitoring. A persistent
                # fault (say, the journal's disk is full) is logged in full
                # once, then only when it changes.
                if str(exc) != self._last_loop_error:
                    LOG.exception("scheduler iteration failed")
                    self._last_loop_error = str(exc)
                self._stop.wait(1.0)

    def step(self, wait: bool = True) -> None:
        """One scheduler iteration: apply queued results and events, refresh
        the inventory when due, hand due domains to the workers, then sleep
        until something is due (unless ``wait`` is False, for tests)."""
        self._wake.clear()
        while True:
            try:
                job = self._events.get_nowait()
            except queue.Empty:
                break
            job()
        now = self._clock()
        if now >= self._inventory_due:
            listed = self._refresh_inventory()
            # While libvirt is unreachable, look again every second, so a
            # (re)connection is followed by an inventory at once.
            self._inventory_due = now + (self._defaults.interval if listed
                                         else INVENTORY_RETRY)
        if now >= self._prune_due:
            self._prune_due = now + PRUNE_EVERY
            pruned = self._store.prune_delivered(self._wall() - DELIVERED_RETENTION)
            if pruned:
                LOG.info("pruned %d delivered notifications older than %d days",
                         pruned, DELIVERED_RETENTION // 86400)
        for uuid, w in self._watched.items():
            if not w.in_flight and now >= w.next_due:
                w.in_flight = True
                w.next_due = now + w.policy.interval
                self._pool.submit(self._make_job(w))
        if not wait:
            return
        next_due = min([w.next_due for w in self._watched.values()]
                       + [self._inventory_due])
        self._wake.wait(max(0.05, min(1.0, next_due - self._clock())))

    def recover_journal(self) -> None:
        """Say at start-up what the journal remembers, so an operator sees
        that a restart neither forgot nor re-sent anything."""
        try:
            records = self._store.all()
            pending = self._store.pending()
        except Exception:
            LOG.exception("cannot read the journal")
            return
        reported = [r for r in records if r.state is machine.State.REPORTED]
        LOG.info("journal: %d domains known, %d reported episodes, %d notifications "
                 "pending delivery", len(records), len(reported), len(pending))

    def _refresh_inventory(self) -> bool:
        """List running domains and (un)watch them; False when libvirt
        could not be asked."""
        try:
            domains = self._hv.list_running_domains()
        except HypervisorUnavailable as exc:
            msg = str(exc) or "libvirt is unreachable"
            if msg != self._last_inventory_error:
                LOG.warning("cannot list domains: %s; verdicts are UNKNOWN until "
                            "libvirt is back", msg)
                self._last_inventory_error = msg
            return False
        if self._last_inventory_error:
            LOG.info("listing domains works again")
            self._last_inventory_error = ""
        seen = set()
        unmonitored: dict[str, str] = {}
        for info in domains:
            seen.add(info.uuid)
            if not info.has_agent:
                self._unwatch(info.uuid, "guest agent channel removed")
                unmonitored[info.uuid] = "no guest agent channel"
                if info.uuid not in self._unmonitored:
                    LOG.info("domain %s (%s) has no guest agent channel: unmonitored",
                             info.name, info.uuid)
                continue
            w = self._watched.get(info.uuid)
            if w is None:
                w = self._watch(info)
                if w is None:
                    unmonitored[info.uuid] = "disabled by policy"
                    continue
            else:
                w.info = info
        for uuid in list(self._watched):
            if uuid not in seen:
                # Only the runtime state goes: a listing can miss a domain
                # for a moment, and a real stop comes as an event.
                self._unwatch(uuid, "no longer listed as running", journal=False)
        self._unmonitored = unmonitored
        self._write_status()
        return True

    def _watch(self, info: DomainInfo) -> Watched | None:
        pol = self._resolve(info)
        if not pol.enabled:
            if info.uuid not in self._unmonitored:
                LOG.info("domain %s (%s) is disabled by policy (%s): unmonitored",
                         info.name, info.uuid, pol.sources.get("enabled", "?"))
            return None
        now = self._clock()
        w = Watched(info=info, policy=pol, probes=[], started_at=now,
                    disconnect_grace_until=now + self._disconnect_grace)
        self._build_probes(w)
        self._hv.prepare_agent(info.uuid, pol.timeout)
        if self._store.get(info.uuid) is None:
            self._store.save(self._new_record(info.uuid, info.name))
        self._watched[info.uuid] = w
        LOG.info("monitoring domain %s (%s): probes %s every %ss, timeout %ss, "
                 "failure threshold %d", info.name, info.uuid,
                 ",".join(p.name for p in pol.probes), pol.interval, pol.timeout,
                 pol.failure_threshold)
        return w

    def _new_record(self, uuid: str, name: str) -> machine.Record:
        """A fresh record continues the domain's episode numbering: Nova
        undefines and redefines a domain on hard reboot, and a reused
        episode number would collide with an outbox row already there."""
        rec = machine.new_record(uuid, name, self._wall())
        return dataclasses.replace(rec, episode=self._store.last_episode(uuid))

    def _unwatch(self, uuid: str, why: str, journal: bool = True) -> None:
        w = self._watched.pop(uuid, None)
        if w is None:
            return
        self._close_probes(w)
        rec = self._store.get(uuid) if journal else None
        if rec is not None:
            self._store.save(machine.on_stopped(rec, self._wall()))
        LOG.info("stopped monitoring domain %s (%s): %s", w.info.name, uuid, why)

    def _resolve(self, info: DomainInfo) -> policy_mod.EffectivePolicy:
        return policy_mod.resolve(self._defaults, info, self._policy_file)

    def _build_probes(self, w: Watched) -> None:
        w.probes = []
        w.probe_error = ""
        for spec in w.policy.probes:
            try:
                w.probes.append(probes_base.load_probe(spec.name, spec.params))
            except Exception as exc:
                w.probe_error = "probe %r cannot be loaded: %s" % (spec.name, exc)
                LOG.error("domain %s (%s): %s", w.info.name, w.info.uuid, w.probe_error)
                w.probes = []
                return

    def _close_probes(self, w: Watched) -> None:
        """Release what the probes left in the guest (a pending exec), on a
        worker: it talks to the agent, and a hung agent must not hold up
        the scheduler thread."""
        probes = list(w.probes)
        if not probes:
            return
        agent = self._hv.agent(w.info.uuid)

        def job() -> None:
            for p in probes:
                try:
                    p.close(agent)
                except Exception as exc:
                    LOG.warning("closing probe %s of %s failed: %s", p.name,
                                w.info.uuid, exc)
        self._pool.submit(job, cleanup=True)

    def _make_job(self, w: Watched) -> Callable[[], None]:
        """The job captures this round's probes and generation, so a
        restart or a policy reload while it runs cannot mix two rounds."""
        generation = w.generation
        probes = list(w.probes)

        def job() -> None:
            try:
                outcome = self._probe(w, probes)
            except Exception as exc:
                LOG.exception("probing %s failed unexpectedly", w.info.uuid)
                outcome = Round(ProbeResult.unknown("monitor error: %s" % exc))
            self._post_result(w, generation, outcome)
        return job

    # -- on a worker thread -------------------------------------------------
    def _probe(self, w: Watched, probes: list[probes_base.Probe]) -> Round:
        """One probe round. Reads ``w`` but writes nothing shared: what it
        learns goes back in the Round, applied on the scheduler thread."""
        # No state check up front (it costs libvirtd three calls per round):
        # a failed agent call re-reads the state, and a paused, migrating or
        # stopped domain then turns the failure into UNKNOWN.
        uuid = w.info.uuid
        timeout = w.policy.timeout
        if w.probe_error:
            return Round(ProbeResult.unknown(w.probe_error))
        agent = self._hv.agent(uuid)
        answered = False
        blocked = None
        if not w.capabilities_checked:
            try:
                info = agent.command("guest-info", None, timeout)
            except AgentError as exc:
                if exc.kind not in GUEST_INFO_REFUSED:
                    return Round(self._failed_call(w, exc))
                info = {}       # refused: nothing known to be blocked
            answered = True
            blocked = {}
            for p in probes:
                result = capabilities.check_probe(p, info)
                if result is not None:
                    blocked[p.name] = result
                    LOG.warning("domain %s (%s): %s", w.info.name, uuid, result.reason)
        known_blocked = w.blocked if blocked is None else blocked
        results = []
        round_ends = self._clock() + timeout
        for p in probes:
            if p.name in known_blocked:
                results.append(known_blocked[p.name])
                continue
            # The round as a whole keeps to the policy's timeout; a probe
            # after a slow one gets what is left (and at least MIN_PROBE_TIME,
            # so it can still answer a healthy guest).
            left = max(MIN_PROBE_TIME, round_ends - self._clock())
            try:
                result = p.run(agent, left)
            except AgentError as exc:
                results.append(self._failed_call(w, exc))
                continue
            results.append(result)
            # Only a HEALTHY answer proves the agent is there: a probe may
            # turn a failed call into a verdict of its own.
            answered = answered or result.verdict is Verdict.HEALTHY
        result = verdict_mod.combine(results)
        grace_left = w.policy.startup_grace - (self._clock() - w.started_at)
        if result.verdict is Verdict.FAILED and grace_left > 0 and not result.reset_requested:
            result = ProbeResult.unknown("in startup grace (%ds left): %s"
                                         % (grace_left, result.reason))
        return Round(result, agent_answered=answered, blocked=blocked)

    def _failed_call(self, w: Watched, exc: AgentError) -> ProbeResult:
        """What a failed agent call says about the guest."""
        if (exc.kind is ErrorKind.AGENT_NOT_CONNECTED
                and self._clock() < w.disconnect_grace_until):
            return ProbeResult.unknown(
                "guest agent not connected, within %ds of a disconnect or of the "
                "start of monitoring (guest shutting down or booting?)"
                % self._disconnect_grace)
        return verdict_mod.verdict_for(exc.kind, self._state_or_gone(w.info.uuid), exc.message)

    def _state_or_gone(self, uuid: str) -> DomainState:
        """Re-read the state after a failed call: a guest paused or
        stopped during the call is UNKNOWN, not FAILED."""
        try:
            return self._hv.domain_state(uuid)
        except HypervisorUnavailable:
            return DomainState.NOSTATE

    # -- applied on the scheduler thread --------------------------------------
    def _apply_result(self, w: Watched, generation: int, outcome: Round) -> None:
        uuid = w.info.uuid
        if self._watched.get(uuid) is not w:
            return  # unwatched (and maybe watched anew) while this round ran
        w.in_flight = False
        if generation != w.generation:
            return  # the domain restarted while this round ran
        if outcome.blocked is not None:
            w.blocked = outcome.blocked
            w.capabilities_checked = True
        if outcome.agent_answered:
            w.disconnect_grace_until = 0.0
        result = outcome.result
        previous = w.last_result
        w.last_result = result
        if previous is None or previous.verdict is not result.verdict:
            log = LOG.warning if result.verdict is Verdict.FAILED else LOG.info
            log("domain %s (%s): %s%s", w.info.name, uuid, result.verdict.value,
                " (%s)" % result.reason if result.reason else "")
        rec = self._store.get(uuid) or self._new_record(uuid, w.info.name)
        thresholds = machine.Thresholds(failure=w.policy.failure_threshold,
                                        success=w.policy.success_threshold)
        new, report = machine.on_result(rec, result, thresholds, self._wall())
        notification = None
        if report is not None:
            notification = notifier_base.make_notification(
                uuid, self._hostname, report.detected_at,
                event=self.conf[options.IIM_GROUP].notification_event)
        if notification is not None or _worth_saving(rec, new):
            self._store.save(new, notification)
        if new.state is not rec.state:
            LOG.info("domain %s (%s): journal %s -> %s", w.info.name, uuid,
                     rec.state.value, new.state.value)
        if notification is not None:
            LOG.warning("domain %s (%s): failure episode %d reported (%s); "
                        "notification queued for Masakari", w.info.name, uuid,
                        report.episode, report.reason)
            self._sender.wake()

    def _apply_event(self, event: LifecycleEvent) -> None:
        LOG.debug("libvirt event %s %s", event.kind.value, event.uuid)
        if event.kind is EventKind.CONNECTION_RESTORED:
            # A restarted libvirtd forgot the agent response timeouts, and
            # events of the outage (a guest rebooting) are lost.
            for uuid, w in self._watched.items():
                self._hv.prepare_agent(uuid, w.policy.timeout)
                self._arm_disconnect_grace(w)
        if event.kind in (EventKind.CONNECTION_LOST, EventKind.CONNECTION_RESTORED,
                          EventKind.DEFINED):
            self._inventory_due = 0.0
            return
        w = self._watched.get(event.uuid)
        if event.kind in RESTART_EVENTS:
            rec = self._store.get(event.uuid)
            if rec is not None:
                self._store.save(machine.on_restarted(rec, self._wall()))
            if w is not None:
                w.generation += 1
                w.started_at = self._clock()
                self._arm_disconnect_grace(w)
                w.capabilities_checked = False
                w.last_result = None
                self._close_probes(w)
                self._build_probes(w)
                self._hv.prepare_agent(event.uuid, w.policy.timeout)
                w.next_due = self._clock() + 1.0
            self._inventory_due = 0.0
        elif event.kind is EventKind.RESUMED and w is not None:
            # Same boot, so the journal state stands (a guest resumed with a
            # wedged kernel must still be reported); results of rounds that
            # ran while it was paused are dropped.
            w.generation += 1
        elif event.kind is EventKind.AGENT_CONNECTED and w is not None:
            w.capabilities_checked = False
        elif event.kind is EventKind.AGENT_DISCONNECTED and w is not None:
            self._arm_disconnect_grace(w)
        elif event.kind in STOP_EVENTS:
            self._unwatch(event.uuid, "domain %s" % event.kind.value)
        elif event.kind is EventKind.UNDEFINED:
            self._unwatch(event.uuid, "domain undefined")
            self._store.forget(event.uuid)
            self._hv.forget_domain(event.uuid)

    def _arm_disconnect_grace(self, w: Watched) -> None:
        w.disconnect_grace_until = self._clock() + self._disconnect_grace

    def _apply_reload(self) -> None:
        new = self._load_policy_file(initial=False)
        if new is None and self.conf[options.IIM_GROUP].policy_file:
            return  # invalid: the previous policy stays in force
        self._policy_file = new
        for uuid, w in list(self._watched.items()):
            pol = self._resolve(w.info)
            if not pol.enabled:
                self._unwatch(uuid, "disabled by policy")
                continue
            probes_changed = pol.probes != w.policy.probes
            timeout_changed = pol.timeout != w.policy.timeout
            w.policy = pol
            if probes_changed:
                # Only then: rebuilding loses a probe's memory (a pending
                # exec, a heartbeat's last value).
                self._close_probes(w)
                w.capabilities_checked = False
                self._build_probes(w)
            if timeout_changed:
                self._hv.prepare_agent(uuid, pol.timeout)
        self._inventory_due = 0.0
        LOG.info("policy reloaded")

    def _load_policy_file(self, initial: bool) -> Any:
        path = self.conf[options.IIM_GROUP].policy_file
        if not path:
            return None
        try:
            return policy_mod.load_policy_file(path)
        except policy_mod.PolicyError as exc:
            if initial:
                raise iim_conf.ConfigError(str(exc))
            LOG.error("policy file rejected, previous policy stays in force: %s", exc)
            return None

    def _write_status(self) -> None:
        try:
            status.write_snapshot(self._status_path, self.snapshot())
        except OSError as exc:
            LOG.warning("cannot write status file %s: %s", self._status_path, exc)

    def snapshot(self) -> dict[str, Any]:
        """What ``masakari-iim status`` shows besides the journal."""
        return {
            "host": self._hostname,
            "written_at": notifier_base.format_generated_time(self._wall()),
            "monitored": {
                # Verdicts are in the journal; only what the running
                # monitor alone knows is written here.
                uuid: {"name": w.info.name,
                       "capability": "; ".join(r.reason for r in w.blocked.values())}
                for uuid, w in self._watched.items()},
            "unmonitored": dict(self._unmonitored),
        }
