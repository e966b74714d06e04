"""Which domains are monitored, and how: the scheduler's bookkeeping.

The registry turns the domain list, libvirt events and policy reloads
into :class:`Watched` entries (and journal facts through the
:class:`JournalWriter`). It decides nothing about timing; the scheduler
(:mod:`monitor.service`) asks it for the entries and runs their rounds.
Only the scheduler thread calls it.
"""
from __future__ import annotations

from typing import Any, Callable

from oslo_log import log as logging

from masakarimonitors_iim import policy as policy_mod
from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import DomainInfo, EventKind, LifecycleEvent
from masakarimonitors_iim.journal.machine import State
from masakarimonitors_iim.monitor.domains import Watched, snapshot
from masakarimonitors_iim.monitor.results import JournalWriter
from masakarimonitors_iim.monitor.settings import Settings

LOG = logging.getLogger(__name__)

#: A new boot: the guest must prove itself healthy again (DISCOVERY).
RESTART_EVENTS = {EventKind.STARTED, EventKind.REBOOTED}
STOP_EVENTS = {EventKind.STOPPED, EventKind.SHUTDOWN, EventKind.CRASHED}
#: Events after which the domain list is read again at once.
RELIST_EVENTS = {EventKind.CONNECTION_LOST, EventKind.CONNECTION_RESTORED,
                 EventKind.DEFINED} | RESTART_EVENTS


class Registry:
    def __init__(self, settings: Settings, *, hypervisor: HypervisorAPI,
                 results: JournalWriter, cleanup: Callable[[Callable[[], None]], None],
                 policy_file: policy_mod.PolicyFile | None,
                 clock: Callable[[], float], spread: Callable[[], float]) -> None:
        self.settings = settings
        self._hv = hypervisor
        self._results = results
        self._cleanup = cleanup
        self._clock = clock
        self._spread = spread
        self.policy_file = policy_file
        self.watched: dict[str, Watched] = {}
        self.unmonitored: dict[str, str] = {}   # uuid -> why (shown in status)
        self.unmonitored_info: dict[str, DomainInfo] = {}   # names, for status

    def sync(self, domains: list[DomainInfo], spread: bool) -> None:
        """(Un)watch after a listing of the running domains. With
        ``spread``, new domains get their first round at a random point of
        their interval (kubelet does this after a restart), so a host with
        many guests does not probe them all in the same instant forever."""
        seen = set()
        unmonitored: dict[str, str] = {}
        for info in domains:
            seen.add(info.uuid)
            if not info.has_agent:
                self.unwatch(info.uuid, "guest agent channel removed")
                unmonitored[info.uuid] = "no guest agent channel"
                if info.uuid not in self.unmonitored:
                    LOG.info("domain %s (%s) has no guest agent channel: unmonitored",
                             info.name, info.uuid)
                continue
            w = self.watched.get(info.uuid)
            if w is not None:
                w.info = info
                if self._results.boot_seen(info.uuid, info.boot_id):
                    # A boot whose STARTED event was lost (libvirt was
                    # reconnecting): the same as seeing the event.
                    LOG.info("domain %s (%s) booted again unseen (boot %s)",
                             info.name, info.uuid, info.boot_id)
                    self.close_probes(w)
                    w.restarted(self._clock(), self.settings.disconnect_grace,
                                loop=self._results.in_boot_loop(info.uuid))
            elif self._watch(info, spread) is None:
                unmonitored[info.uuid] = "disabled by policy"
        for uuid in list(self.watched):
            if uuid not in seen:
                # Only the runtime state goes: a listing can miss a domain
                # for a moment, and a real stop comes as an event.
                self.unwatch(uuid, "no longer listed as running", journal=False)
        self.unmonitored = unmonitored
        self.unmonitored_info = {d.uuid: d for d in domains if d.uuid in unmonitored}

    def _watch(self, info: DomainInfo, spread: bool) -> Watched | None:
        pol = self._resolve(info)
        if not pol.enabled:
            if info.uuid not in self.unmonitored:
                LOG.info("domain %s (%s) is disabled by policy (%s): unmonitored",
                         info.name, info.uuid, pol.sources.get("enabled", "?"))
            return None
        now = self._clock()
        # Only a guest the journal holds as healthy waits for its spread
        # first round: a suspect one is probed at once.
        # A FAILING streak older than a whole streak could take is not
        # continued (the monitor was down meanwhile); a changed boot id is
        # a restart it did not see.
        stale_after = pol.failure_threshold * pol.interval + pol.timeout
        healthy = self._results.watched(info.uuid, info.name, info.boot_id,
                                        stale_after) is State.HEALTHY
        delay = self._spread() * pol.interval if spread and healthy else 0.0
        w = Watched(info=info, policy=pol, started_at=now,
                    disconnect_grace_until=now + self.settings.disconnect_grace,
                    next_due=now + delay)
        w.build_probes()
        self._hv.set_agent_timeout(info.uuid, pol.timeout)
        self.watched[info.uuid] = w
        LOG.info("monitoring domain %s (%s): probes %s every %ss, timeout %ss, "
                 "failure threshold %d", info.name, info.uuid,
                 ",".join(p.name for p in pol.probes), pol.interval, pol.timeout,
                 pol.failure_threshold)
        return w

    def unwatch(self, uuid: str, why: str, journal: bool = True) -> None:
        w = self.watched.get(uuid)
        if w is None:
            return
        if journal:
            # First: if the write fails, the domain is still watched and
            # the scheduler applies the whole event again.
            self._results.stopped(uuid)
        del self.watched[uuid]
        self._results.unwatched(uuid)
        self.close_probes(w)
        # An unmonitored domain keeps no trace of the monitor: its agent
        # timeout is not set again after a restart or reconnect.
        self._hv.forget_domain(uuid)
        LOG.info("stopped monitoring domain %s (%s): %s", w.info.name, uuid, why)

    def close_probes(self, w: Watched) -> None:
        """On a worker: closing talks to the agent, and a hung agent must
        not hold up the scheduler thread. It takes an agent slot like a
        round (see Dispatcher.run_cleanup)."""
        job = w.closer(self._hv.agent(w.info.uuid))
        if job is not None:
            self._cleanup(job)

    def _resolve(self, info: DomainInfo) -> policy_mod.EffectivePolicy:
        return policy_mod.resolve(self.settings.defaults, info, self.policy_file)

    def on_event(self, event: LifecycleEvent) -> bool:
        """Apply one libvirt event; True when the domains should be listed
        again at once."""
        grace = self.settings.disconnect_grace
        w = self.watched.get(event.uuid)
        if event.kind is EventKind.CONNECTION_RESTORED:
            # Events of the outage (a guest rebooting) are lost.
            for each in self.watched.values():
                each.arm_disconnect_grace(self._clock(), grace)
        elif event.kind in RESTART_EVENTS:
            self._results.restarted(event.uuid)
            if w is not None:
                self.close_probes(w)
                w.restarted(self._clock(), grace,
                            loop=self._results.in_boot_loop(event.uuid))
        elif event.kind is EventKind.RESUMED and w is not None:
            # Same boot, so the journal state stands (a guest resumed with a
            # wedged kernel must still be reported); results of rounds that
            # ran while it was paused are dropped.
            w.generation += 1
        elif event.kind is EventKind.AGENT_CONNECTED and w is not None:
            w.capabilities_checked = False
        elif event.kind is EventKind.AGENT_DISCONNECTED and w is not None:
            w.arm_disconnect_grace(self._clock(), grace)
        elif event.kind in STOP_EVENTS:
            self.unwatch(event.uuid, "domain %s" % event.kind.value)
        elif event.kind is EventKind.UNDEFINED:
            self.unwatch(event.uuid, "domain undefined")
            self._results.forget(event.uuid)
        return event.kind in RELIST_EVENTS

    def reload(self, policy_file: policy_mod.PolicyFile | None) -> None:
        """Resolve every watched domain's policy again."""
        self.policy_file = policy_file
        for uuid, w in list(self.watched.items()):
            pol = self._resolve(w.info)
            if not pol.enabled:
                self.unwatch(uuid, "disabled by policy")
                continue
            if pol.probes != w.policy.probes:
                # Only then: rebuilding loses a probe's memory (a pending
                # exec, a heartbeat's last value).
                self.close_probes(w)
            if w.apply_policy(pol):
                self._hv.set_agent_timeout(uuid, pol.timeout)

    def policy_of(self, uuid: str) -> policy_mod.EffectivePolicy | None:
        """The policy a watched domain is monitored with (for the guards)."""
        w = self.watched.get(uuid)
        return w.policy if w is not None else None

    def snapshot(self, now: float, monotonic: float) -> dict[str, Any]:
        snap = snapshot(self.settings.hostname, now, monotonic, self.watched,
                        self.unmonitored, self.unmonitored_info)
        # Shortened only while the agent is suspect (hypervisor.timeouts).
        for uuid, row in snap["monitored"].items():
            row["agent_timeout"] = self._hv.agent_timeout_in_force(uuid)
        return snap
