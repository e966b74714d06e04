"""The scale benchmark's simulated hypervisor behaves as its figures assume:
a hung guest costs the timeout and fails like the real layer, a healthy
one answers, every call is counted, and no more calls run at once than
the simulated libvirtd allows. Correctness only: no timing targets."""
from __future__ import annotations

import importlib.util
import sys
import threading
import time
import unittest
from pathlib import Path
from typing import Any

from masakarimonitors_iim.hypervisor.interface import HypervisorAPI
from masakarimonitors_iim.hypervisor.types import AgentError, DomainState, ErrorKind


def _load_sim() -> Any:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_sim.py"
    spec = importlib.util.spec_from_file_location("scale_sim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("scale_sim", module)
    spec.loader.exec_module(module)
    return module


scale_sim = _load_sim()


class SimHypervisorTest(unittest.TestCase):
    def setUp(self) -> None:
        self.hv = scale_sim.SimHypervisor(4, healthy_latency=0.001, max_client_requests=2,
                                          default_agent_timeout=0.3,
                                          call_seconds=lambda timeout: timeout)
        self.hv.start()
        self.uuids = [d.uuid for d in self.hv.domains]
        for uuid in self.uuids:
            self.hv.set_agent_timeout(uuid, 0.2)

    def test_implements_every_interface_method(self) -> None:
        wanted = {name for name in vars(HypervisorAPI) if not name.startswith("_")}
        missing = sorted(name for name in wanted if not hasattr(self.hv, name))
        self.assertEqual([], missing)

    def test_domains_are_distinct_and_stable(self) -> None:
        self.assertEqual(4, len(set(self.uuids)))
        again = scale_sim.SimHypervisor(4)
        self.assertEqual(self.uuids, [d.uuid for d in again.domains])
        self.assertTrue(all(d.has_agent and d.state is DomainState.RUNNING
                            for d in self.hv.domains))

    def test_healthy_guest_answers_and_is_counted(self) -> None:
        agent = self.hv.agent(self.uuids[0])
        self.assertEqual({}, agent.command("guest-ping", None, 1.0))
        info = agent.command("guest-info", None, 1.0)
        self.assertIn("guest-ping", [c["name"] for c in info["supported_commands"]])
        self.assertEqual(1, self.hv.calls["agent:guest-ping"])
        self.assertEqual(1, self.hv.calls["agent:guest-info"])
        self.assertEqual(2, self.hv.per_domain[self.uuids[0]])
        self.assertEqual(0, self.hv.per_domain[self.uuids[1]])

    def test_hung_guest_costs_the_timeout_and_times_out(self) -> None:
        self.hv.hang({self.uuids[1]})
        started = time.monotonic()
        with self.assertRaises(AgentError) as caught:
            self.hv.agent(self.uuids[1]).command("guest-ping", None, 0.2)
        self.assertGreaterEqual(time.monotonic() - started, 0.2)
        self.assertIs(ErrorKind.AGENT_TIMEOUT, caught.exception.kind)
        self.assertEqual(86, caught.exception.code)
        self.assertEqual(1, self.hv.calls["agent:guest-ping"])
        # the others stay healthy
        self.assertEqual({}, self.hv.agent(self.uuids[0]).command("guest-ping", None, 0.2))

    def test_in_sync_the_call_timeout_then_the_domain_timeout_once_applied(self) -> None:
        """As measured on libvirt 9.0: an agent it is in sync with costs the
        call's own timeout; the next call waits for a guest-sync bounded by
        the domain's timeout, which the real layer applies after a timed-out
        call and takes back when the agent answers."""
        uuid = self.uuids[2]
        agent = self.hv.agent(uuid)
        agent.command("guest-ping", None, 0.2)          # answered: in sync
        self.assertIsNone(self.hv.agent_timeout_in_force(uuid))
        self.hv.hang({uuid})
        costs = []
        for _ in range(2):
            started = time.monotonic()
            with self.assertRaises(AgentError):
                agent.command("guest-ping", None, 0.1)
            costs.append(time.monotonic() - started)
        self.assertLess(costs[0], 0.19)                  # the call's 0.1 s
        self.assertGreaterEqual(costs[1], 0.2)           # the domain's 0.2 s
        self.assertEqual(0.2, self.hv.agent_timeout_in_force(uuid))
        self.hv.hung.discard(uuid)
        agent.command("guest-ping", None, 0.2)
        self.assertIsNone(self.hv.agent_timeout_in_force(uuid))

    def test_libvirt_takes_whole_seconds(self) -> None:
        self.assertEqual([1.0, 1.0, 2.0], [scale_sim.libvirt_call_seconds(t)
                                           for t in (0.2, 1.0, 1.5)])

    def test_hung_guest_without_a_timeout_set_costs_libvirts_default(self) -> None:
        self.hv.forget_domain(self.uuids[1])
        self.assertIsNone(self.hv.agent_timeout_in_force(self.uuids[1]))
        self.hv.hang({self.uuids[1]})
        started = time.monotonic()
        with self.assertRaises(AgentError):
            self.hv.agent(self.uuids[1]).command("guest-ping", None, 0.2)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_unknown_domain(self) -> None:
        self.assertIs(DomainState.GONE, self.hv.domain_state("no-such-uuid"))
        with self.assertRaises(AgentError) as caught:
            self.hv.agent("no-such-uuid").command("guest-ping", None, 0.2)
        self.assertIs(ErrorKind.NO_DOMAIN, caught.exception.kind)

    def test_list_state_and_bookkeeping_calls_are_counted(self) -> None:
        self.assertEqual(self.uuids, [d.uuid for d in self.hv.list_running_domains()])
        self.assertIs(DomainState.RUNNING, self.hv.domain_state(self.uuids[2]))
        self.hv.forget_domain(self.uuids[3])
        snap = self.hv.snapshot()
        # bookkeeping ("api:") is counted apart from libvirt calls
        self.assertEqual({"list": 1, "state": 1, "api:set_agent_timeout": 4,
                          "api:forget_domain": 1}, snap["calls"])
        self.assertEqual(1, self.hv.per_domain[self.uuids[2]])

    def test_no_more_calls_at_once_than_the_slots(self) -> None:
        self.hv.hang(set(self.uuids[:3]))
        errors: list[ErrorKind] = []

        def call(uuid: str) -> None:
            try:
                self.hv.agent(uuid).command("guest-ping", None, 0.2)
            except AgentError as exc:
                errors.append(exc.kind)
        threads = [threading.Thread(target=call, args=(u,)) for u in self.uuids[:3]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        self.assertEqual([ErrorKind.AGENT_TIMEOUT] * 3, errors)
        self.assertEqual(2, self.hv.peak_in_flight)
        # the third call waited for a slot: about one timeout
        self.assertGreater(self.hv.slot_wait_max, 0.1)
        self.assertEqual(0, self.hv.in_flight)

    def test_simulator_cpu_is_measured_not_sleep(self) -> None:
        self.hv.hang({self.uuids[0]})
        with self.assertRaises(AgentError):
            self.hv.agent(self.uuids[0]).command("guest-ping", None, 0.2)
        # sleeping through the timeout is not CPU
        self.assertLess(self.hv.cpu, 0.1)
        self.assertGreaterEqual(self.hv.cpu, 0.0)


if __name__ == "__main__":
    unittest.main()
