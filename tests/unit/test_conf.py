"""Configuration: upstream names, start-up validation, sample in sync."""
import os
import subprocess
import sys

import pytest
from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_conf(tmp_path, text):
    path = tmp_path / "masakarimonitors.conf"
    path.write_text(text)
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf(["--config-file", str(path)], project="masakarimonitors", default_config_files=[])
    return conf


def test_upstream_names_and_defaults(tmp_path):
    conf = make_conf(tmp_path, "")
    group = conf.introspectiveinstancemonitor
    assert (group.guest_monitoring_interval, group.guest_monitoring_timeout,
            group.guest_monitoring_failure_threshold) == (10, 2, 3)
    assert (conf.callback.retry_max, conf.callback.retry_interval) == (12, 10)
    assert conf.libvirt.connection_uri == "qemu:///system"
    assert conf.api.auth_type == "password"
    iim_conf.validate(conf)


def test_hostname_falls_back_to_host(tmp_path):
    assert iim_conf.hostname(make_conf(tmp_path, "[DEFAULT]\nhost = h1\n")) == "h1"
    assert iim_conf.hostname(make_conf(
        tmp_path, "[DEFAULT]\nhost = h1\nhostname = compute-7\n")) == "compute-7"


@pytest.mark.parametrize("text, words", [
    ("[introspectiveinstancemonitor]\nguest_monitoring_interval = ten\n",
     ["guest_monitoring_interval", "introspectiveinstancemonitor"]),
    ("[introspectiveinstancemonitor]\nguest_monitoring_timeout = 0\n",
     ["guest_monitoring_timeout"]),
    ("[callback]\nretry_interval = -1\n", ["retry_interval", "callback"]),
    ("[introspectiveinstancemonitor]\nnotification_event = BOOM\n",
     ["notification_event"]),
    ("[introspectiveinstancemonitor]\nguest_monitoring_intreval = 5\n",
     ["unknown option", "guest_monitoring_intreval"]),
    ("[introspectiveinstancemonitor]\nnotifier = pigeon\n", ["notifier", "pigeon", "masakari"]),
])
def test_bad_values_fail_with_one_line_naming_the_option(tmp_path, text, words):
    conf = make_conf(tmp_path, text)
    with pytest.raises(iim_conf.ConfigError) as info:
        iim_conf.validate(conf)
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_foreign_groups_are_left_alone(tmp_path):
    # The same file configures masakari-monitors' other monitors.
    conf = make_conf(tmp_path, "[host]\nmonitoring_driver = default\n"
                               "[process]\nprocess_list_path = /x\n")
    iim_conf.validate(conf)


def test_sample_config_is_in_sync(tmp_path):
    out = tmp_path / "sample.conf"
    generator_conf = os.path.join(ROOT, "etc/oslo-config-generator/masakari-iim.conf")
    subprocess.run([sys.executable, "-m", "oslo_config.generator",
                    "--config-file", generator_conf,
                    "--output-file", str(out)], check=True, cwd=ROOT, timeout=60)
    committed = os.path.join(ROOT, "etc/masakarimonitors/masakarimonitors.conf.sample")
    with open(committed) as fh:
        assert fh.read() == out.read_text(), (
            "etc/masakarimonitors/masakarimonitors.conf.sample is stale: run `make sample-config`")
