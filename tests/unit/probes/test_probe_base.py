"""The probe loader, sanitising and the round budget."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.probes import base
from masakarimonitors_iim.probes.base import (
    Deadline,
    ProbeConfigError,
    UnknownProbe,
    load_probe,
)
from masakarimonitors_iim.probes.ping import PingProbe
from masakarimonitors_iim.verdict import Verdict


def test_ping_loads_through_stevedore_and_runs(agent):
    agent.script("guest-ping", {})
    probe = load_probe("ping", {})
    assert isinstance(probe, PingProbe)
    assert probe.run(agent, 2.0).verdict is Verdict.HEALTHY


def test_unknown_probe_names_what_is_installed():
    with pytest.raises(UnknownProbe) as info:
        load_probe("no-such-probe", {})
    assert "no-such-probe" in str(info.value) and "ping" in str(info.value)


def test_bad_params_raise_probe_config_error():
    with pytest.raises(ProbeConfigError) as info:
        load_probe("ping", {"interval": 3})
    assert "interval" in str(info.value)


def test_params_must_be_a_mapping():
    with pytest.raises(ProbeConfigError):
        PingProbe(["/bin/true"])


def test_deadline_gives_each_call_what_is_left(clock):
    deadline = Deadline(2.0, clock.monotonic)
    assert deadline.call_timeout() == 2.0
    clock.advance(1.5)
    assert deadline.call_timeout() == pytest.approx(0.5)
    clock.advance(5)
    assert deadline.remaining() == 0.0
    assert deadline.call_timeout() == 0.1   # never 0: libvirt reads 0 as "don't wait"


def test_available_probes_lists_ours():
    assert {"ping", "exec", "heartbeat_file"} <= set(base.available_probes())
