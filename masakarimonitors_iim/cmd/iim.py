"""``masakari-iim``: run the monitor, or look at what it is doing.

    masakari-iim [--config-file F] [--config-dir D] [run]    run in the foreground
    masakari-iim status [--json] [DOMAIN]                     journal, probes, outbox
    masakari-iim policy show DOMAIN                           effective policy, and why
    masakari-iim outbox list [--status S]                     notifications owed
    masakari-iim outbox requeue ID                            send a dead letter again

``masakari-iim COMMAND --help`` describes each (:mod:`.cli`). Exit codes:
0 done, 1 the database or libvirt failed or the thing asked for is not
there, 2 a configuration or command-line error (one line on stderr).
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import driver

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.cmd import cli
from masakarimonitors_iim.cmd import outbox
from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.conf import options
from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.monitor.lock import JournalLocked
from masakarimonitors_iim.policy import PolicyError

LOG = logging.getLogger(__name__)
STOP_DEADLINE = 4.0   # SIGTERM must finish within 5 s
MONITORS_NAMESPACE = "masakarimonitors_iim.monitors"


def main(argv: list[str] | None = None, conf: cfg.ConfigOpts | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    conf = iim_conf.CONF if conf is None else conf
    try:
        cli.parse(argv, conf)
        command = conf.command.name or "run"
        if command == "run":
            return _run(conf)
        journal_path = conf[options.IIM_GROUP].journal_path
        if command == "status":
            return _status(journal_path, conf.command.as_json, conf.command.domain,
                           conf.callback.retry_max)
        if command == "policy":          # its only action: show
            return _policy_show(conf, conf.command.domain)
        if conf.command.outbox_action == "list":
            return outbox.list_entries(journal_path, conf.command.outbox_status,
                                       conf.callback.retry_max)
        return outbox.requeue(journal_path, conf.command.entry_id)
    except (iim_conf.ConfigError, cfg.Error, PolicyError) as exc:
        print("masakari-iim: configuration error: %s" % one_line(exc, 2000),
              file=sys.stderr)
        return 2
    except JournalLocked as exc:    # a second monitor on one journal
        print("masakari-iim: %s" % one_line(exc, 2000), file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print("masakari-iim: %s" % exc, file=sys.stderr)
        return 1


def _status(journal_path: str, as_json: bool, domain: str | None, retry_max: int) -> int:
    from masakarimonitors_iim.status import model, render_json, render_text

    view = model.load(journal_path, time.time(), retry_max)
    if domain:
        one = model.select(view, domain)
        if one is None:
            print("masakari-iim: no domain %r in the journal at %s or the monitor's "
                  "snapshot" % (one_line(domain, 100), journal_path), file=sys.stderr)
            return 1
        view = one
    print(render_json.render(view) if as_json else render_text.render(view, detail=bool(domain)))
    return 0


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
