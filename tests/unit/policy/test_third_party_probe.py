"""A probe from a separately installed package is picked up through its
entry point alone: loadable, validated by the policy loader, runnable."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.policy import PolicyError, load_policy_file
from masakarimonitors_iim.probes.base import UnknownProbe, available_probes, load_probe
from masakarimonitors_iim.verdict import Verdict

PLUGIN = '''
from masakarimonitors_iim.probes.base import Probe, ProbeConfigError
from masakarimonitors_iim.verdict import ProbeResult


class PortProbe(Probe):
    """Asks the guest whether something listens on a TCP port."""

    name = "example_port"

    def __init__(self, params):
        super().__init__(params)
        port = self.params.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ProbeConfigError("probe 'example_port' parameter 'port': must be "
                                   "a TCP port number, e.g. 5060")
        self.port = port

    def required_commands(self):
        return {"guest-exec", "guest-exec-status"}

    def run(self, agent, timeout):
        agent.command("guest-ping", None, timeout)
        return ProbeResult.healthy("port %d" % self.port)


class BrokenProbe(Probe):
    name = "example_broken"

    def __init__(self, params):
        raise RuntimeError("plugin bug")

    def run(self, agent, timeout):
        raise AssertionError
'''

POLICY = "version: 1\nrules:\n  - name: sip\n    probes:\n      - ping\n      - %s\n"


@pytest.fixture
def third_party(install_dist):
    with pytest.raises(UnknownProbe):      # not installed yet
        load_probe("example_port", {"port": 5060})
    install_dist("iim-example-probes",
                 {"masakarimonitors_iim.probes": {
                     "example_port": "iim_example_probes:PortProbe",
                     "example_broken": "iim_example_probes:BrokenProbe"}},
                 {"iim_example_probes": PLUGIN})


def test_loaded_through_entry_point(third_party):
    probe = load_probe("example_port", {"port": 5060})
    assert type(probe).__module__ == "iim_example_probes"
    assert {"example_port", "ping"} <= set(available_probes())

    class Agent:
        domain_uuid = "x"

        def command(self, name, arguments=None, timeout=2.0):
            return {}

    assert probe.run(Agent(), 1.0).verdict is Verdict.HEALTHY


def test_validated_by_the_policy_loader(third_party, write_policy):
    ok = load_policy_file(write_policy(POLICY % "{name: example_port, params: {port: 5060}}"))
    assert ok.rules[0].values["probes"][1].params == {"port": 5060}

    with pytest.raises(PolicyError) as info:
        load_policy_file(write_policy(POLICY % "{name: example_port, params: {port: 0}}",
                                      "bad.yaml"))
    assert "field 'probes[1].params'" in str(info.value)
    assert "must be a TCP port number" in str(info.value)


def test_a_plugin_bug_rejects_the_file_instead_of_crashing(third_party, write_policy):
    with pytest.raises(PolicyError) as info:
        load_policy_file(write_policy(POLICY % "example_broken"))
    assert "field 'probes[1]'" in str(info.value) and "plugin bug" in str(info.value)


def test_gone_again_after_the_test(install_dist):
    # A fresh fixture: the previous test's package is not visible.
    with pytest.raises(UnknownProbe):
        load_probe("example_port", {"port": 5060})
