"""A probe from a separately installed package is picked up through its
entry point alone: loadable, validated by the policy loader, runnable,
and heard by policy resolution about its own parameters."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.policy import (
    Defaults,
    PolicyError,
    explain,
    load_policy_file,
    resolve,
)
from masakarimonitors_iim.probes.base import (
    UnknownProbe,
    available_probes,
    load_probe,
    probe_class,
)
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


class WindowProbe(Probe):
    """Averages over ``window`` seconds and may use ``budget`` per round."""

    name = "example_window"

    @classmethod
    def policy_notes(cls, params, interval, timeout):
        notes = []
        if params.get("window", 60) < interval:
            notes.append("probe 'example_window' window %g s is shorter than the "
                         "interval %g s" % (params["window"], interval))
        if params.get("budget", 0) > timeout:
            notes.append("probe 'example_window' budget %g s exceeds the round "
                         "timeout %g s" % (params["budget"], timeout))
        return notes

    def run(self, agent, timeout):
        return ProbeResult.healthy()


class NotesBugProbe(Probe):
    name = "example_notes_bug"

    @classmethod
    def policy_notes(cls, params, interval, timeout):
        raise RuntimeError("notes bug")

    def run(self, agent, timeout):
        return ProbeResult.healthy()
'''

POLICY = "version: 1\nrules:\n  - name: sip\n    probes:\n      - ping\n      - %s\n"


@pytest.fixture
def third_party(install_dist):
    with pytest.raises(UnknownProbe):      # not installed yet
        load_probe("example_port", {"port": 5060})
    install_dist("iim-example-probes",
                 {"masakarimonitors_iim.probes": {
                     "example_port": "iim_example_probes:PortProbe",
                     "example_broken": "iim_example_probes:BrokenProbe",
                     "example_window": "iim_example_probes:WindowProbe",
                     "example_notes_bug": "iim_example_probes:NotesBugProbe"}},
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


NOTES_POLICY = """\
version: 1
rules:
  - name: r
    interval: 20
    timeout: 5
    probes:
      - ping
      - %s
"""
WINDOW_SHORT = "probe 'example_window' window 10 s is shorter than the interval 20 s"


@pytest.mark.parametrize("probe, extra_specs, notes", [
    # the default hook: no notes
    ("{name: example_port, params: {port: 5060}}", {}, []),
    ("{name: example_window, params: {window: 60}}", {}, []),
    ("{name: example_window, params: {window: 10}}", {}, [WINDOW_SHORT]),
    # several notes from one probe, in the probe's order
    ("{name: example_window, params: {window: 10, budget: 9}}", {},
     [WINDOW_SHORT, "probe 'example_window' budget 9 s exceeds the round timeout 5 s"]),
    # judged against the final values, after per-instance keys
    ("{name: example_window, params: {window: 10}}", {"masakari_iim:interval": "5"}, []),
    ("{name: example_window, params: {window: 30}}", {"masakari_iim:interval": "40"},
     ["probe 'example_window' window 30 s is shorter than the interval 40 s"]),
    # a plugin's bug is a note, never an exception out of resolve()
    ("example_notes_bug", {},
     ["probe 'example_notes_bug': checking its parameters against the policy "
      "failed: notes bug"]),
])
def test_policy_notes_hook(third_party, write_policy, make_domain, probe, extra_specs, notes):
    policy_file = load_policy_file(write_policy(NOTES_POLICY % probe))
    policy = resolve(Defaults(interval=30, timeout=10, failure_threshold=3),
                     make_domain(flavor_extra_specs=extra_specs), policy_file)
    assert list(policy.notes) == notes
    lines = explain(policy)
    assert lines[len(lines) - len(notes):] == ["note: %s" % note for note in notes]


def test_probe_class_never_instantiates(third_party):
    broken = probe_class("example_broken")      # its __init__ raises
    assert broken is not None and broken.__name__ == "BrokenProbe"
    assert probe_class("example_broken") is broken     # cached
    assert probe_class("no_such_probe") is None


def test_gone_again_after_the_test(install_dist):
    # A fresh fixture: the previous test's package is not visible.
    with pytest.raises(UnknownProbe):
        load_probe("example_port", {"port": 5060})
    assert probe_class("example_port") is None
