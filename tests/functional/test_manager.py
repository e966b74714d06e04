"""masakari-monitors can run this monitor through its manager option.

masakari-monitors builds the manager named in
``[DEFAULT] introspectiveinstancemonitor_manager`` with
``importutils.import_object(name, host=...)`` and drives it with
init_host(), main() (blocking) and stop(); reset() on SIGHUP. This does the
same, against a real libvirt connection (the test driver).
"""
import threading
import time

from oslo_config import cfg
from oslo_utils import importutils

from masakarimonitors_iim import conf as iim_conf

CLASS = "masakarimonitors_iim.manager.IntrospectiveInstanceMonitorManager"


def test_manager_lifecycle_as_masakari_monitors_drives_it(tmp_path):
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    conf.set_override("connection_uri", "test:///default", group="libvirt")
    conf.set_override("journal_path", str(tmp_path / "journal.sqlite"),
                      group="introspectiveinstancemonitor")
    conf.set_override("notifier", "log", group="introspectiveinstancemonitor")

    manager = importutils.import_object(CLASS, host="compute-1", conf=conf)
    manager.init_host()
    runner = threading.Thread(target=manager.main, daemon=True)
    runner.start()
    status = tmp_path / "iim-status.json"
    deadline = time.monotonic() + 20
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status.exists(), "the monitor never listed the domains"
    assert "no guest agent channel" in status.read_text()
    manager.reset()
    started = time.monotonic()
    manager.stop()
    runner.join(5)
    assert not runner.is_alive()
    assert time.monotonic() - started < 5
