"""The trust fields of issue 8: action, boot deadline, restart budget,
corroboration. Rules and flavor extra specs (the operator's) may set them;
image properties (often tenants') may not: a tenant could otherwise switch
its VM's reporting off without the operator seeing it."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.policy import Defaults, PolicyError, explain, load_policy_file, resolve

DEFAULTS = Defaults(interval=30.0, timeout=5.0, failure_threshold=3)
KEY = "masakari_iim:"

BASE = """\
version: 1
instance_keys: [image_properties, flavor_extra_specs]
rules:
  - name: all
    interval: 10
"""


def test_defaults_are_vspheres(make_domain):
    p = resolve(DEFAULTS, make_domain())
    assert (p.action, p.boot_deadline, p.boot_report, p.restart_budget,
            p.restart_budget_window, p.restart_budget_reset, p.corroborate) == (
        "notify", 240.0, "seen-before", 3, 86400.0, 3600.0, True)


def test_a_rule_sets_every_trust_field(write_policy, make_domain):
    text = BASE + """\
  - name: watch-only
    action: observe
    boot_deadline: 20
    boot_report: always
    restart_budget: 1
    restart_budget_window: 600
    restart_budget_reset: 30
    corroborate: false
"""
    p = resolve(DEFAULTS, make_domain(), load_policy_file(write_policy(text)))
    assert (p.action, p.boot_deadline, p.boot_report, p.restart_budget,
            p.restart_budget_window, p.restart_budget_reset, p.corroborate) == (
        "observe", 20.0, "always", 1, 600.0, 30.0, False)
    lines = explain(p)
    assert "action: observe  [rule 'watch-only']" in lines
    assert "corroborate: no  [rule 'watch-only']" in lines


@pytest.mark.parametrize("field,value,says", [
    ("action", "reboot", "must be one of notify, observe"),
    ("boot_report", "never", "must be one of seen-before, always"),
    ("corroborate", "yes", "must be true or false"),
    ("boot_deadline", 0, "between 1 and 86400"),
    ("restart_budget", -1, "between 0 and 1000"),
    ("restart_budget_window", 10, "between 60 and"),
])
def test_bad_values_are_refused_with_the_field_named(write_policy, field, value, says):
    text = BASE + "    %s: %r\n" % (field, value)
    with pytest.raises(PolicyError) as err:
        load_policy_file(write_policy(text))
    assert field in str(err.value) and says in str(err.value)


@pytest.mark.parametrize("key,value", [
    ("action", "observe"), ("restart_budget", "0"), ("corroborate", "false"),
    ("boot_deadline", "86400"), ("boot_report", "always"),
    ("restart_budget_window", "60"), ("restart_budget_reset", "0"),
])
def test_image_properties_may_not_set_them(write_policy, make_domain, key, value):
    domain = make_domain(image_properties={KEY + key: value})
    p = resolve(DEFAULTS, domain, load_policy_file(write_policy(BASE)))
    assert p.sources[key] == "config"
    assert any("only the operator" in n and key in n for n in p.notes), p.notes


def test_flavor_extra_specs_may(write_policy, make_domain):
    domain = make_domain(flavor_extra_specs={KEY + "action": "observe",
                                             KEY + "restart_budget": "5",
                                             KEY + "corroborate": "no"})
    p = resolve(DEFAULTS, domain, load_policy_file(write_policy(BASE)))
    assert (p.action, p.restart_budget, p.corroborate) == ("observe", 5, False)
    assert p.notes == ()


def test_a_bad_flavor_value_is_ignored_and_noted(write_policy, make_domain):
    domain = make_domain(flavor_extra_specs={KEY + "action": "reset"})
    p = resolve(DEFAULTS, domain, load_policy_file(write_policy(BASE)))
    assert p.action == "notify"
    assert any("must be one of notify, observe" in n for n in p.notes)
