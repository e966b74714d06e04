"""``masakari-iim``: run the monitor, or look at what it is doing.

    masakari-iim [--config-file F] [--config-dir D]            run in the foreground
    masakari-iim status [--config-file F]                      journal, verdicts, outbox
    masakari-iim policy show DOMAIN [--config-file F]          effective policy, and why
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import driver

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.conf import options
from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.policy import PolicyError

LOG = logging.getLogger(__name__)
STOP_DEADLINE = 4.0   # SIGTERM must finish within 5 s
MONITORS_NAMESPACE = "masakarimonitors_iim.monitors"


def _parse(argv: list[str], conf: cfg.ConfigOpts) -> None:
    iim_conf.register_opts(conf)
    logging.register_options(conf)
    default = iim_conf.DEFAULT_CONFIG_FILE
    defaults = [default] if os.path.exists(default) else []
    conf(argv, project="masakarimonitors", prog="masakari-iim",
         default_config_files=defaults)
    iim_conf.validate(conf)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else "run"
    rest = argv[1:] if command != "run" else argv
    conf = iim_conf.CONF
    try:
        if command == "run":
            _parse(rest, conf)
            return _run(conf)
        if command == "status":
            _parse(rest, conf)
            from masakarimonitors_iim import status
            print(status.render(conf[options.IIM_GROUP].journal_path))
            return 0
        if command == "policy" and rest[:1] == ["show"] and len(rest) >= 2:
            domain = rest[1]
            _parse(rest[2:], conf)
            return _policy_show(conf, domain)
    except (iim_conf.ConfigError, cfg.Error, PolicyError) as exc:
        print("masakari-iim: configuration error: %s" % one_line(exc, 2000),
              file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print("masakari-iim: %s" % exc, file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


def _run(conf: cfg.ConfigOpts) -> int:
    """Load the monitor by name through stevedore, the way any runner
    (masakari-monitors included) can, and drive it as a Manager."""
    logging.setup(conf, "masakari-iim")
    conf.log_opt_values(LOG, logging.DEBUG)   # secret options are masked
    manager: Any = driver.DriverManager(
        MONITORS_NAMESPACE, "introspective", invoke_on_load=True,
        invoke_kwds={"host": iim_conf.hostname(conf), "conf": conf}).driver
    manager.init_host()
    done = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        LOG.info("signal %d received", signum)
        done.set()

    def on_hup(signum: int, frame: object) -> None:
        LOG.info("SIGHUP received: reloading the policy file")
        manager.reset()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    runner = threading.Thread(target=manager.main, name="monitor", daemon=True)
    runner.start()
    while not done.wait(1.0):
        if not runner.is_alive():
            LOG.error("the monitor stopped on its own")
            return 1
    manager.stop()
    runner.join(STOP_DEADLINE)
    return 0


def _policy_show(conf: cfg.ConfigOpts, domain: str) -> int:
    from masakarimonitors_iim import policy
    from masakarimonitors_iim.hypervisor.calls import Hypervisor
    from masakarimonitors_iim.monitor.settings import defaults_from_conf

    # No logging.setup: only warnings reach stderr, the answer goes to stdout.
    path = conf[options.IIM_GROUP].policy_file
    policy_file = policy.load_policy_file(path) if path else None
    hv = Hypervisor(conf.libvirt.connection_uri)
    hv.start()
    try:
        if not hv.wait_connected(10):
            print("masakari-iim: cannot connect to libvirt at %s"
                  % conf.libvirt.connection_uri, file=sys.stderr)
            return 1
        matches = [d for d in hv.list_running_domains() if domain in (d.uuid, d.name)]
    finally:
        hv.stop()
    if not matches:
        print("masakari-iim: no running domain named or with UUID %r" % domain,
              file=sys.stderr)
        return 1
    info = matches[0]
    print("domain %s (%s)%s" % (info.name, info.uuid,
                                "" if info.has_agent else ": no guest agent channel, unmonitored"))
    eff = policy.resolve(defaults_from_conf(conf), info, policy_file)
    for line in policy.explain(eff):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
