"""resolve(): config, then matching rules in order, then per-instance keys;
every value says where it came from."""
from __future__ import annotations

import copy

import pytest

from masakarimonitors_iim.policy import (
    Defaults,
    FIELDS,
    EffectivePolicy,
    ProbeSpec,
    explain,
    load_policy_file,
    resolve,
)

DEFAULTS = Defaults(interval=30.0, timeout=5.0, failure_threshold=3)

POLICY = """\
version: 1
probe_sets:
  web:
    - ping
    - name: exec
      params: {command: ["/usr/bin/check-web"], timeout: 3}
  slow:
    - name: exec
      params: {command: ["/usr/bin/check-batch"], timeout: 60}
rules:
  - name: all
    interval: 10
  - name: shop
    match: {project_name: shop}
    failure_threshold: 5
    probe_set: web
  - name: small-flavors
    match: {flavor_name: "m1.s*"}
    interval: 20
    startup_grace: 120
  - name: scratch
    match: {instance_name: ["scratch-*", "tmp-*"]}
    enabled: false
"""


@pytest.fixture
def policy_file(write_policy):
    return load_policy_file(write_policy(POLICY))


def test_config_only(make_domain):
    policy = resolve(DEFAULTS, make_domain())
    assert policy == EffectivePolicy(
        enabled=True, probes=(ProbeSpec("ping"),), interval=30.0, timeout=5.0,
        failure_threshold=3, success_threshold=1, startup_grace=0.0,
        sources={f: "config" for f in FIELDS})
    assert (policy.action, policy.boot_deadline, policy.boot_report, policy.restart_budget,
            policy.restart_budget_window, policy.restart_budget_reset,
            policy.corroborate) == ("notify", 240.0, "seen-before", 3, 86400.0, 3600.0, True)


def test_matching_rules_layer_in_file_order(policy_file, make_domain):
    policy = resolve(DEFAULTS, make_domain(), policy_file)

    assert policy.matched_rules == ("all", "shop", "small-flavors")
    assert (policy.interval, policy.sources["interval"]) == (20.0, "rule 'small-flavors'")
    assert (policy.failure_threshold, policy.sources["failure_threshold"]) == (5, "rule 'shop'")
    assert [p.name for p in policy.probes] == ["ping", "exec"]
    assert policy.sources["probes"] == "rule 'shop' (probe_set 'web')"
    assert (policy.startup_grace, policy.sources["startup_grace"]) == (120.0,
                                                                       "rule 'small-flavors'")
    assert (policy.timeout, policy.sources["timeout"]) == (5.0, "config")
    assert policy.enabled is True


@pytest.mark.parametrize("domain_kwargs, matched", [
    ({}, ("all", "shop", "small-flavors")),
    ({"project_name": "bank"}, ("all", "small-flavors")),
    ({"flavor_name": "m1.large"}, ("all", "shop")),
    ({"instance_name": "tmp-42"}, ("all", "shop", "small-flavors", "scratch")),
    ({"nova": False}, ("all",)),
])
def test_which_rules_match(policy_file, make_domain, domain_kwargs, matched):
    assert resolve(DEFAULTS, make_domain(**domain_kwargs), policy_file).matched_rules == matched


@pytest.mark.parametrize("match, domain_kwargs, expected", [
    ("{instance_uuid: 0E5B2C1A-6F7D-4C3B-9A8E-1D2C3B4A5F60}", {}, True),
    ("{instance_uuid: 11111111-*}", {}, False),
    ("{instance_name: 'web-?'}", {}, True),
    ("{instance_name: 'Web-*'}", {}, False),              # names are case-sensitive
    ("{domain_name: 'instance-*'}", {"nova": False}, True),
    ("{flavor_name: [m1.tiny, m1.small]}", {}, True),
    ("{image_uuid: 5a1d2c3b-0000-4000-8000-00000000cafe}", {}, True),
    ("{project_uuid: 9f8e7d6c5b4a49388271605f4e3d2c1b}", {}, True),
    ("{project_name: shop, flavor_name: m1.large}", {}, False),   # all must hold
    ("{project_name: shop}", {"nova": False}, False),
    ("{image_properties: {os_distro: 'ubuntu*'}}",
     {"image_properties": {"os_distro": "ubuntu22.04"}}, True),
    ("{image_properties: {os_distro: ubuntu}}", {}, False),       # not in the XML
    ("{flavor_extra_specs: {'hw:cpu_policy': dedicated}}",
     {"flavor_extra_specs": {"hw:cpu_policy": "dedicated"}}, True),
    ("{flavor_extra_specs: {'hw:cpu_policy': dedicated}}",
     {"flavor_extra_specs": {"hw:cpu_policy": "shared"}}, False),
    ("{}", {"nova": False}, True),
])
def test_match_keys(write_policy, make_domain, match, domain_kwargs, expected):
    policy_file = load_policy_file(write_policy(
        "version: 1\nrules:\n  - name: r\n    match: %s\n    interval: 7\n" % match))
    policy = resolve(DEFAULTS, make_domain(**domain_kwargs), policy_file)
    assert (policy.matched_rules == ("r",)) is expected


def test_disabled_by_rule_is_listed_as_unmonitored(policy_file, make_domain):
    policy = resolve(DEFAULTS, make_domain(instance_name="scratch-1"), policy_file)
    assert policy.enabled is False
    assert policy.sources["enabled"] == "rule 'scratch'"
    assert explain(policy)[0] == "enabled: no (unmonitored by policy)  [rule 'scratch']"


def test_flavor_extra_specs_override_rules(policy_file, make_domain):
    domain = make_domain(flavor_extra_specs={
        "masakari_iim:failure_threshold": "8",
        "masakari_iim:interval": "15.5",
        "masakari_iim:probe_set": "slow",
        "hw:cpu_policy": "dedicated",
    })
    policy = resolve(DEFAULTS, domain, policy_file)
    assert (policy.failure_threshold, policy.sources["failure_threshold"]) == (
        8, "flavor extra spec 'masakari_iim:failure_threshold'")
    assert policy.interval == 15.5
    assert policy.probes == policy_file.probe_sets["slow"]
    assert policy.sources["probes"] == (
        "flavor extra spec 'masakari_iim:probe_set' (probe_set 'slow')")


def test_per_instance_keys_apply_without_a_policy_file(make_domain):
    domain = make_domain(flavor_extra_specs={"masakari_iim:enabled": "False"})
    policy = resolve(DEFAULTS, domain)
    assert policy.enabled is False
    assert policy.sources["enabled"] == "flavor extra spec 'masakari_iim:enabled'"


def test_image_properties_ignored_unless_allowed(policy_file, make_domain):
    domain = make_domain(image_properties={"masakari_iim:enabled": "false"})
    policy = resolve(DEFAULTS, domain, policy_file)
    assert policy.enabled is True
    assert any("instance_keys" in n for n in policy.notes)


def test_flavor_wins_over_image_when_both_allowed(write_policy, make_domain):
    policy_file = load_policy_file(write_policy(
        "version: 1\ninstance_keys: [image_properties, flavor_extra_specs]\n"))
    domain = make_domain(image_properties={"masakari_iim:interval": "5",
                                           "masakari_iim:timeout": "2"},
                         flavor_extra_specs={"masakari_iim:interval": "60"})
    policy = resolve(DEFAULTS, domain, policy_file)
    assert (policy.interval, policy.sources["interval"]) == (
        60.0, "flavor extra spec 'masakari_iim:interval'")
    assert (policy.timeout, policy.sources["timeout"]) == (
        2.0, "image property 'masakari_iim:timeout'")


@pytest.mark.parametrize("key, value, fragment", [
    ("masakari_iim:interval", "fast", "must be a number"),
    ("masakari_iim:interval", "0.01", "between 1 and 3600"),
    ("masakari_iim:interval", "nan", "must be a number"),
    ("masakari_iim:failure_threshold", "2.5", "must be a integer"),
    ("masakari_iim:enabled", "maybe", "true or false"),
    ("masakari_iim:probe_set", "nope", "no probe set"),
    ("masakari_iim:probes", "ping", "unknown key"),
])
def test_bad_per_instance_values_are_ignored_with_a_note(policy_file, make_domain,
                                                         key, value, fragment):
    domain = make_domain(flavor_extra_specs={key: value})
    policy = resolve(DEFAULTS, domain, policy_file)
    baseline = resolve(DEFAULTS, make_domain(), policy_file)
    assert policy.sources == baseline.sources
    assert any(fragment in note and key in note for note in policy.notes), policy.notes


def test_combination_notes(write_policy, make_domain):
    policy_file = load_policy_file(write_policy("""\
        version: 1
        rules:
          - name: r
            interval: 20
            probes:
              - {name: exec, params: {command: [/bin/check], timeout: 30}}
              - {name: heartbeat_file, params: {path: /run/hb, max_age: 30}}
        """))
    notes = resolve(DEFAULTS, make_domain(), policy_file).notes
    assert any("exceeds the round timeout" in n for n in notes)
    assert any("less than twice the interval" in n for n in notes)


EXEC_NOTE = ("probe 'exec' timeout %s s exceeds the round timeout 4 s: the command spans "
             "rounds and the rounds in between report UNKNOWN")
HEARTBEAT_NOTE = ("probe 'heartbeat_file' max_age %s s is less than twice the interval 20 s: "
                  "a stalled heartbeat may go unnoticed; raise max_age or lower interval")


@pytest.mark.parametrize("probe, notes", [
    ("{name: exec, params: {command: [/bin/check], timeout: 30}}", [EXEC_NOTE % "30"]),
    ("{name: exec, params: {command: [/bin/check], timeout: 4.5}}", [EXEC_NOTE % "4.5"]),
    ("{name: exec, params: {command: [/bin/check], timeout: 4}}", []),
    ("{name: exec, params: {command: [/bin/check]}}", []),
    ("{name: heartbeat_file, params: {path: /run/hb, max_age: 39.5}}", [HEARTBEAT_NOTE % "39.5"]),
    ("{name: heartbeat_file, params: {path: /run/hb, max_age: 40}}", []),
    ("ping", []),
])
def test_builtin_probe_notes(write_policy, make_domain, probe, notes):
    # The texts the exec and heartbeat_file probes give through policy_notes.
    policy_file = load_policy_file(write_policy(
        "version: 1\nrules:\n  - name: r\n    interval: 20\n    timeout: 4\n"
        "    probes: [%s]\n" % probe))
    assert list(resolve(DEFAULTS, make_domain(), policy_file).notes) == notes


def test_resolve_is_pure(policy_file, make_domain):
    domain = make_domain(flavor_extra_specs={"masakari_iim:interval": "12"})
    before = copy.deepcopy((policy_file, domain))
    first = resolve(DEFAULTS, domain, policy_file)
    second = resolve(DEFAULTS, domain, policy_file)
    assert first == second
    assert (policy_file, domain) == before


def test_explain_lists_every_field_with_its_source(policy_file, make_domain):
    lines = explain(resolve(DEFAULTS, make_domain(), policy_file))
    assert lines[0] == "enabled: yes  [config]"
    assert lines[1] == ('probes: ping, exec {"command": ["/usr/bin/check-web"], '
                        '"timeout": 3}  [rule \'shop\' (probe_set \'web\')]')
    assert lines[2] == "interval: 20 s  [rule 'small-flavors']"
    assert "failure_threshold: 5  [rule 'shop']" in lines
    assert lines[-1] == "matched rules: all, shop, small-flavors"
