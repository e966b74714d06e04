"""Image properties (tenants) may make monitoring more patient, never
costlier for the host than the operator allows (issue 8)."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.policy import (
    Defaults,
    PolicyError,
    explain,
    load_policy_file,
    resolve,
)
from masakarimonitors_iim.policy.model import TenantLimits
from masakarimonitors_iim.policy.tenant import bound

DEFAULTS = Defaults(interval=30.0, timeout=5.0, failure_threshold=3)
KEY = "masakari_iim:"

BASE = """\
version: 1
instance_keys: [image_properties, flavor_extra_specs]
probe_sets:
  web: [ping]
  slow:
    - name: exec
      params: {command: ["/usr/bin/check-batch"], timeout: 60}
rules:
  - name: all
    interval: 10
    success_threshold: 2
"""

LIMITS = BASE + """\
tenant_limits:
  max_timeout: 8
  min_interval: 4
  min_failure_threshold: 2
  min_success_threshold: 1
  min_startup_grace: 0
  probe_sets: [web]
"""


@pytest.mark.parametrize("field,value,operator,limits,expected,why", [
    # timeout: lower is free, higher only to the operator's value or max_timeout
    ("timeout", 2.0, 5.0, {}, 2.0, ""),
    ("timeout", 5.0, 5.0, {}, 5.0, ""),
    ("timeout", 600.0, 5.0, {}, 5.0, "above 5 s (the operator's value"),
    ("timeout", 600.0, 5.0, {"max_timeout": 10.0}, 10.0, "above 10 s (tenant_limits"),
    ("timeout", 7.0, 5.0, {"max_timeout": 10.0}, 7.0, ""),
    # a tighter max_timeout never takes away what the operator gives
    ("timeout", 30.0, 30.0, {"max_timeout": 5.0}, 30.0, ""),
    ("timeout", 31.0, 30.0, {"max_timeout": 5.0}, 30.0, "above 30 s"),
    # interval: longer is free, shorter only to the operator's or min_interval
    ("interval", 3600.0, 10.0, {}, 3600.0, ""),
    ("interval", 1.0, 10.0, {}, 10.0, "below 10 s"),
    ("interval", 1.0, 10.0, {"min_interval": 4.0}, 4.0, "below 4 s (tenant_limits"),
    ("interval", 5.0, 10.0, {"min_interval": 4.0}, 5.0, ""),
    # thresholds and grace: more patient is free, less only to the bound
    ("failure_threshold", 100, 3, {}, 100, ""),
    ("failure_threshold", 1, 3, {}, 3, "below 3 (the operator"),
    ("failure_threshold", 1, 3, {"min_failure_threshold": 2}, 2, "below 2"),
    ("success_threshold", 1, 2, {}, 2, "success_threshold below 2"),
    ("success_threshold", 1, 2, {"min_success_threshold": 1}, 1, ""),
    ("startup_grace", 86400.0, 0.0, {}, 86400.0, ""),
    ("startup_grace", 0.0, 120.0, {}, 120.0, "startup_grace below 120 s"),
    ("startup_grace", 0.0, 120.0, {"min_startup_grace": 60.0}, 60.0, "below 60 s"),
    # enabled: a tenant may switch its own VM off, not the operator's back on
    ("enabled", False, True, {}, False, ""),
    ("enabled", True, True, {}, True, ""),
    ("enabled", True, False, {}, None, "operator disabled monitoring"),
])
def test_bound_table(field, value, operator, limits, expected, why):
    got, note = bound(field, value, operator, TenantLimits(bounds=limits))
    assert got == expected
    if why:
        assert why in note
    else:
        assert note == ""


@pytest.mark.parametrize("props,field,expected,note", [
    # the attack: a 600 s timeout from an image property
    ({"timeout": "600"}, "timeout", 8.0, "clamped image property 'masakari_iim:timeout'"),
    ({"timeout": "1"}, "timeout", 1.0, None),
    ({"interval": "1"}, "interval", 4.0, "clamped image property 'masakari_iim:interval'"),
    ({"failure_threshold": "1"}, "failure_threshold", 2, "clamped"),
    ({"failure_threshold": "9"}, "failure_threshold", 9, None),
    ({"enabled": "false"}, "enabled", False, None),
    # still bounded by the field's own range first, and said so
    ({"timeout": "601"}, "timeout", 5.0, "ignored image property 'masakari_iim:timeout'"),
    ({"probe_set": "slow"}, "probes", None, "tenant_limits.probe_sets allows image "
                                           "properties only web"),
])
def test_image_properties_are_bounded(write_policy, make_domain, props, field,
                                      expected, note):
    policy_file = load_policy_file(write_policy(LIMITS))
    domain = make_domain(image_properties={KEY + k: v for k, v in props.items()})
    policy = resolve(DEFAULTS, domain, policy_file)
    if field == "probes":
        assert [p.name for p in policy.probes] == ["ping"]   # the config default
    else:
        assert getattr(policy, field) == expected
    if note is None:
        assert policy.notes == ()
        assert policy.sources[field].startswith("image property")
    else:
        assert any(note in n for n in policy.notes), policy.notes
        assert len(policy.notes) == 1


def test_clamp_is_shown_by_policy_show(write_policy, make_domain):
    policy_file = load_policy_file(write_policy(BASE))
    domain = make_domain(image_properties={KEY + "timeout": "600"})
    lines = explain(resolve(DEFAULTS, domain, policy_file))
    assert "timeout: 5 s  [image property 'masakari_iim:timeout' (clamped)]" in lines
    assert ("note: clamped image property 'masakari_iim:timeout'='600' to 5: an image "
            "property may not set timeout above 5 s (the operator's value; "
            "tenant_limits.max_timeout can widen this)") in lines


def test_tenant_cannot_enable_what_a_rule_disabled(write_policy, make_domain):
    text = BASE + "  - name: shop-off\n    match: {project_name: shop}\n    enabled: false\n"
    domain = make_domain(image_properties={KEY + "enabled": "true"})
    policy = resolve(DEFAULTS, domain, load_policy_file(write_policy(text)))
    assert policy.enabled is False and policy.sources["enabled"] == "rule 'shop-off'"
    assert any("operator disabled monitoring" in n for n in policy.notes)


def test_flavor_extra_specs_are_the_admins_and_not_bounded(write_policy, make_domain):
    domain = make_domain(image_properties={KEY + "timeout": "600"},
                         flavor_extra_specs={KEY + "timeout": "60",
                                             KEY + "enabled": "true"})
    policy = resolve(DEFAULTS, domain, load_policy_file(write_policy(BASE)))
    assert policy.timeout == 60.0
    assert policy.sources["timeout"] == "flavor extra spec 'masakari_iim:timeout'"


def test_bounds_are_against_the_operator_not_the_flavor(write_policy, make_domain):
    """The flavor applies after the image: the image's clamp uses the
    rules' value, and the flavor then wins as before."""
    domain = make_domain(image_properties={KEY + "interval": "1"},
                         flavor_extra_specs={KEY + "interval": "2"})
    policy = resolve(DEFAULTS, domain, load_policy_file(write_policy(BASE)))
    assert policy.interval == 2.0
    assert any("below 10 s" in n for n in policy.notes)


def test_without_limits_any_probe_set_may_be_chosen(write_policy, make_domain):
    domain = make_domain(image_properties={KEY + "probe_set": "slow"})
    policy = resolve(DEFAULTS, domain, load_policy_file(write_policy(BASE)))
    assert [p.name for p in policy.probes] == ["exec"]


def test_limits_are_loaded(write_policy):
    limits = load_policy_file(write_policy(LIMITS)).tenant_limits
    assert limits.bounds == {"max_timeout": 8.0, "min_interval": 4.0,
                             "min_failure_threshold": 2, "min_success_threshold": 1,
                             "min_startup_grace": 0.0}
    assert limits.probe_sets == ("web",)
    assert load_policy_file(write_policy(BASE)).tenant_limits == TenantLimits()


@pytest.mark.parametrize("limits,field,problem", [
    ("[1]", "tenant_limits", "must be a mapping"),
    ("{timeout: 5}", "tenant_limits.timeout", "unknown key; known keys are max_timeout"),
    ("{max_timeout: 601}", "tenant_limits.max_timeout", "between 0.5 and 600"),
    ("{max_timeout: .nan}", "tenant_limits.max_timeout", "must be a number"),
    ("{max_timeout: true}", "tenant_limits.max_timeout", "must be a number"),
    ("{min_failure_threshold: 1.5}", "tenant_limits.min_failure_threshold",
     "must be a integer"),
    ("{probe_sets: web}", "tenant_limits.probe_sets", "must be a list"),
    ("{probe_sets: [nope]}", "tenant_limits.probe_sets",
     "'nope' is not defined under probe_sets (defined: slow, web)"),
])
def test_bad_limits_refuse_the_whole_file(write_policy, limits, field, problem):
    with pytest.raises(PolicyError) as err:
        load_policy_file(write_policy(BASE + "tenant_limits: %s\n" % limits))
    text = str(err.value)
    assert "top level, field %r: " % field in text and problem in text
    assert "\n" not in text
