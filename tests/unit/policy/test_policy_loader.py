"""load_policy_file: a valid file loads whole; any error rejects it whole
with one line naming the rule and the field."""
from __future__ import annotations


import pytest

from masakarimonitors_iim.policy import PolicyError, ProbeSpec, load_policy_file

VALID = """\
version: 1
instance_keys: [flavor_extra_specs, image_properties]
probe_sets:
  web:
    - ping
    - name: exec
      params: {command: ["/usr/bin/curl", "-fsS", "http://127.0.0.1/health"], timeout: 3}
rules:
  - name: everything
    interval: 10
    timeout: 5
    failure_threshold: 3
  - name: shop-web
    match:
      project_name: shop
      flavor_name: ["m1.*", "web.*"]
      flavor_extra_specs: {"hw:cpu_policy": dedicated}
    probe_set: web
    success_threshold: 2
    startup_grace: 60
  - name: quiet
    match: {instance_name: "scratch-*"}
    enabled: false
  - name: heartbeat
    match: {image_properties: {app: billing}}
    probes:
      - name: heartbeat_file
        params: {path: /run/billing/hb, max_age: 30, format: counter}
"""


def test_valid_file_loads_whole(write_policy):
    policy = load_policy_file(write_policy(VALID))

    assert [r.name for r in policy.rules] == ["everything", "shop-web", "quiet", "heartbeat"]
    assert policy.instance_keys == ("image_properties", "flavor_extra_specs")
    assert policy.probe_sets["web"][0] == ProbeSpec("ping", {})
    shop = policy.rules[1]
    assert shop.index == 2 and shop.probe_set == "web"
    assert shop.values == {"success_threshold": 2, "startup_grace": 60.0,
                           "probes": policy.probe_sets["web"]}
    assert shop.match.fields == {"project_name": ("shop",), "flavor_name": ("m1.*", "web.*")}
    assert shop.match.flavor_extra_specs == {"hw:cpu_policy": ("dedicated",)}
    assert policy.rules[0].values == {"interval": 10.0, "timeout": 5.0, "failure_threshold": 3}
    assert policy.rules[2].values == {"enabled": False}


def test_minimal_file(write_policy):
    policy = load_policy_file(write_policy("version: 1\n"))
    assert policy.rules == () and policy.instance_keys == ("flavor_extra_specs",)


RULE = "version: 1\nrules:\n  - name: web\n"


@pytest.mark.parametrize("text, where, field", [
    # the file as a whole
    ("rules: [\n", "not valid YAML", None),
    ("", "the file is empty", None),
    ("- name: x\n", "top level", None),
    ("rules: []\n", "top level", "version"),
    ("version: 2\n", "top level", "version"),
    ("version: 1\nrule: []\n", "top level", "rule"),
    ("version: 1\nrules: {name: x}\n", "top level", "rules"),
    ("version: 1\ninstance_keys: [server_metadata]\n", "top level", "instance_keys"),
    # rule identity
    ("version: 1\nrules:\n  - interval: 5\n", "rule #1", "name"),
    ("version: 1\nrules:\n  - name: a b\n", "rule #1", "name"),
    ("version: 1\nrules:\n  - name: a\n  - name: a\n", "rule #2", "name"),
    ("version: 1\nrules:\n  - just-a-string\n", "rule #1", None),
    # rule fields
    (RULE + "    intervall: 5\n", "rule 'web' (#1)", "intervall"),
    (RULE + "    interval: 0\n", "rule 'web' (#1)", "interval"),
    (RULE + "    interval: '10'\n", "rule 'web' (#1)", "interval"),
    (RULE + "    timeout: .inf\n", "rule 'web' (#1)", "timeout"),
    (RULE + "    failure_threshold: 2.5\n", "rule 'web' (#1)", "failure_threshold"),
    (RULE + "    success_threshold: true\n", "rule 'web' (#1)", "success_threshold"),
    (RULE + "    startup_grace: -1\n", "rule 'web' (#1)", "startup_grace"),
    (RULE + "    enabled: 'yes'\n", "rule 'web' (#1)", "enabled"),
    (RULE + "    interval: 5\n    interval: 6\n", "duplicate key 'interval'", None),
    # probes
    (RULE + "    probes: []\n", "rule 'web' (#1)", "probes"),
    (RULE + "    probes: ping\n", "rule 'web' (#1)", "probes"),
    (RULE + "    probes: [{name: nope}]\n", "rule 'web' (#1)", "probes[0].name"),
    (RULE + "    probes: [ping, {params: {}}]\n", "rule 'web' (#1)", "probes[1].name"),
    (RULE + "    probes: [{name: exec, parms: {}}]\n", "rule 'web' (#1)", "probes[0].parms"),
    (RULE + "    probes: [{name: exec, params: [1]}]\n", "rule 'web' (#1)", "probes[0].params"),
    (RULE + "    probes: [{name: exec, params: {command: /bin/check}}]\n",
     "rule 'web' (#1)", "probes[0].params"),
    (RULE + "    probes: [{name: ping, params: {x: 1}}]\n", "rule 'web' (#1)",
     "probes[0].params"),
    (RULE + "    probes: [{name: heartbeat_file, params: {path: /hb}}]\n",
     "rule 'web' (#1)", "probes[0].params"),
    # an explicit null is not a number of seconds (it used to crash every round)
    (RULE + "    probes: [{name: heartbeat_file, params: {path: /hb, max_age: null}}]\n",
     "must be a number, got None", "probes[0].params"),
    (RULE + "    probes: [{name: heartbeat_file, params: {path: /hb, max_age: 30, "
     "max_skew: ~}}]\n", "parameter 'max_skew'", "probes[0].params"),
    (RULE + "    probe_set: nope\n", "rule 'web' (#1)", "probe_set"),
    (RULE + "    probe_set: x\n    probes: [ping]\n", "rule 'web' (#1)", "probe_set"),
    # match
    (RULE + "    match: [flavor_name]\n", "rule 'web' (#1)", "match"),
    (RULE + "    match: {flavour_name: m1.small}\n", "rule 'web' (#1)", "match.flavour_name"),
    (RULE + "    match: {flavor_name: []}\n", "rule 'web' (#1)", "match.flavor_name"),
    (RULE + "    match: {flavor_extra_specs: {'hw:numa_nodes': 2}}\n", "rule 'web' (#1)",
     "match.flavor_extra_specs.hw:numa_nodes"),
    (RULE + "    match: {image_properties: [os_distro]}\n", "rule 'web' (#1)",
     "match.image_properties"),
    # probe sets
    ("version: 1\nprobe_sets:\n  basic: [{name: exec}]\n", "probe set 'basic'",
     "probes[0].params"),
    ("version: 1\nprobe_sets:\n  basic: []\n", "probe set 'basic'", "probes"),
    ("version: 1\nprobe_sets: [ping]\n", "top level", "probe_sets"),
])
def test_invalid_file_names_rule_and_field(write_policy, text, where, field):
    path = write_policy(text)
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    message = str(info.value)
    assert message.startswith("policy file %s: " % path)
    assert where in message
    if field is not None:
        assert "field %r" % field in message
    assert "\n" not in message


def test_probe_message_is_passed_through(write_policy):
    path = write_policy(RULE + "    probes: [{name: exec, params: {command: /bin/check}}]\n")
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert "argv, no shell" in str(info.value)


def test_one_bad_rule_rejects_the_whole_file(write_policy):
    good = load_policy_file(write_policy(VALID))
    bad_path = write_policy(VALID + "  - name: broken\n    interval: -5\n", "v2.yaml")

    with pytest.raises(PolicyError) as info:
        load_policy_file(bad_path)

    assert "rule 'broken' (#5)" in str(info.value)
    # The loader returns nothing on error and keeps no state: what the
    # caller had is all there is.
    assert [r.name for r in good.rules] == ["everything", "shop-web", "quiet", "heartbeat"]


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policy_file(str(tmp_path / "nope.yaml"))
    assert "cannot be read" in str(info.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_policy_file(str(path))
    assert "UTF-8" in str(info.value)


def test_unsafe_yaml_tags_are_refused(write_policy):
    path = write_policy("version: 1\nrules: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(PolicyError):
        load_policy_file(path)


def test_oversized_file(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("version: 1\n" + "#" * (1024 * 1024 + 10) + "\n")
    with pytest.raises(PolicyError) as info:
        load_policy_file(str(path))
    assert "bytes" in str(info.value)


def test_reset_marker_validated_through_entry_point(write_policy, with_reset_marker):
    ok = load_policy_file(write_policy(
        RULE + "    probes: [{name: reset_marker, params: {path: /var/lib/app/reset}}]\n"))
    assert ok.rules[0].values["probes"][0].name == "reset_marker"
    with pytest.raises(PolicyError) as info:
        load_policy_file(write_policy(
            RULE + "    probes: [{name: reset_marker, params: {path: reset}}]\n", "b.yaml"))
    assert "field 'probes[0].params'" in str(info.value)


def test_unreadable_file(tmp_path):
    # A directory cannot be read as a file, even by root (chmod 0 can).
    with pytest.raises(PolicyError) as info:
        load_policy_file(str(tmp_path))
    assert str(tmp_path) in str(info.value)
