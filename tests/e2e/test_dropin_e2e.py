"""The masakari-monitors drop-in, proven: masakari-monitors 22.0.0's own
``masakari-introspectiveinstancemonitor`` binary, with ``[DEFAULT]
introspectiveinstancemonitor_manager`` pointing at this project's Manager,
on the testbed's real guests and real Masakari.

masakari-monitors lives in its own virtualenv, made by the testbed
installer (``install.ensure_masakari_monitors``) with this checkout
installed into it in editable mode. One config file serves both packages:
the binary reads it, and ``masakari-iim status`` (the project's venv)
reads the same file to show what the monitor inside masakari-monitors is
doing.

There, oslo.service's launcher owns the signals: these tests show that
SIGTERM stops the binary cleanly within 5 s, also after a SIGHUP (which
makes the launcher stop and start the manager again).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed import install
from testbed.monitor_process import MonitorProcess

MANAGER = "masakarimonitors_iim.manager.IntrospectiveInstanceMonitorManager"
BINARY = "masakari-introspectiveinstancemonitor"
#: What the masakari-monitors launcher logs when it starts its service.
UPSTREAM_START = "Starting masakarimonitors-introspectiveinstancemonitor"
UPSTREAM_STOP = "Stopping masakarimonitors-introspectiveinstancemonitor"


@pytest.fixture
def monitors_venv(testbed) -> Path:
    venv = install.monitors_venv(testbed.cache)
    assert (venv / "bin" / BINARY).exists(), f"testbed setup left no {BINARY} in {venv}"
    return venv


@pytest.fixture
def dropin(e2e, monitors_venv) -> Iterator[MonitorProcess]:
    """masakari-monitors' binary running our manager, from a config file
    ``masakari-iim`` reads too; killed at teardown if a test left it running."""
    mon = MonitorProcess(
        e2e.tb,
        e2e.tb.workdir / "monitors" / f"{e2e.test_name}-dropin",
        options={"DEFAULT": {"introspectiveinstancemonitor_manager": MANAGER}},
        run_command=[str(monitors_venv / "bin" / BINARY)],
    )
    try:
        yield mon
    finally:
        mon.kill()


# Run by the masakari-monitors venv's python: both packages' options in one
# ConfigOpts, registered plainly (no DuplicateOptError swallowed), in both
# orders; then the drop-in config file parsed, validated as our manager
# does, and keystoneauth's password plugin loaded from it (it registers its
# own [api] options then: the clash that used to break password auth).
OPTIONS_CHECK = textwrap.dedent("""\
    import importlib, json, sys
    from keystoneauth1 import loading as ks_loading
    from oslo_config import cfg
    from masakarimonitors_iim import conf as iim_conf
    from masakarimonitors_iim.conf import options

    UPSTREAM = ("api", "base", "consul", "host", "instance",
                "introspectiveinstancemonitor", "kubernetes", "process", "service")

    def upstream(conf):
        for name in UPSTREAM:
            importlib.import_module("masakarimonitors.conf." + name).register_opts(conf)

    def ours(conf):
        for group, opts in options.registered_groups():
            conf.register_opts(opts, group=None if group == "DEFAULT" else group)

    config_file, password_file = sys.argv[1:3]
    result = {}
    for name, order in (("upstream first", (upstream, ours)),
                        ("ours first", (ours, upstream))):
        conf = cfg.ConfigOpts()
        try:
            for register in order:
                register(conf)
            conf(["--config-file", config_file], project="masakarimonitors",
                 default_config_files=[])
            iim_conf.validate(conf)
            manager = conf.introspectiveinstancemonitor_manager
            result[name] = {"hostname": conf.hostname, "manager": manager,
                            "interval": conf.introspectiveinstancemonitor
                                            .guest_monitoring_interval}
            conf = cfg.ConfigOpts()
            for register in order:
                register(conf)
            conf(["--config-file", password_file], project="masakarimonitors",
                 default_config_files=[])
            iim_conf.validate(conf)
            plugin = ks_loading.load_auth_from_conf_options(conf, "api")
            result[name]["password plugin"] = type(plugin).__name__
        except Exception as exc:
            result[name] = "%s: %s" % (type(exc).__name__, exc)
    print(json.dumps(result))
""")


def test_both_packages_options_register_together_and_read_one_file(
    e2e, monitors_venv, tmp_path
) -> None:
    """Every option both packages define is defined identically, so they
    register on one ConfigOpts in either order; the drop-in config file
    means the same whichever registered first; password auth loads."""
    mon = MonitorProcess(
        e2e.tb,
        tmp_path / "mon",
        options={"DEFAULT": {"introspectiveinstancemonitor_manager": MANAGER}},
    )
    password = tmp_path / "password.conf"
    password.write_text(
        "[api]\nauth_type = password\nauth_url = http://127.0.0.1:9/identity\n"
        "username = masakari\npassword = pw\nproject_name = service\n"
    )
    out = subprocess.run(
        [
            str(monitors_venv / "bin/python"),
            "-c",
            OPTIONS_CHECK,
            str(mon.config_path),
            str(password),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    expected = {
        "hostname": e2e.tb.hostname,
        "manager": MANAGER,
        "interval": 1,
        "password plugin": "Password",
    }
    assert result == {"upstream first": expected, "ours first": expected}, result


def test_masakari_monitors_runs_our_manager_notifies_and_stops_on_sigterm(
    e2e, dropin, timings
) -> None:
    """A frozen guest agent, seen by our manager inside masakari-monitors'
    binary: one notification in Masakari, processed to ``finished``, the VM
    restarted. Then SIGHUP (the launcher restarts the manager) and SIGTERM:
    exit 0 within 5 s."""
    tb = e2e.tb
    vm = e2e.guest("iim-dropin")
    dropin.start()
    assert UPSTREAM_START in dropin.log(), dropin.log()[-2000:]
    e2e.wait_domain(dropin, vm, journal="HEALTHY", verdict="HEALTHY")
    pid = tb.qemu_pid(vm.name)

    frozen_at = time.monotonic()
    tb.freeze_agent(vm.name)
    deadline = frozen_at + 60
    while not e2e.notifications_for(vm):
        assert dropin.running, dropin.log()[-2000:]
        assert time.monotonic() < deadline, "no notification in Masakari within 60 s"
        time.sleep(0.2)
    timings["drop-in: agent frozen -> notification in Masakari"] = time.monotonic() - frozen_at
    e2e.wait_recovered(dropin, vm, pid_before=pid, since=frozen_at)

    # SIGHUP: oslo.service (daemonised: stdout is no terminal) stops the
    # manager, calls reset() and starts it again, on the same journal.
    offset = dropin.log_size()
    dropin.reload()
    dropin.wait_log("journal:", timeout=30, after=offset)
    restart = dropin.log()[offset:]
    assert UPSTREAM_STOP in restart and restart.count(UPSTREAM_START) == 1, restart
    assert ", 0 notifications pending delivery" in restart, restart
    e2e.wait_domain(dropin, vm, journal="HEALTHY", verdict="HEALTHY", timeout=30)

    offset = dropin.log_size()
    code = dropin.stop(timeout=15)
    seconds = dropin.last_stop_seconds
    assert seconds is not None
    timings["drop-in: SIGTERM -> exit"] = seconds
    log = dropin.log()[offset:]
    assert (code, seconds < 5) == (0, True), f"exit {code} after {seconds:.1f}s; log: {log}"
    assert UPSTREAM_STOP in log and "stopped" in log, log
    assert len(e2e.notifications_for(vm)) == 1
