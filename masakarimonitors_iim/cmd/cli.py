"""The command line of ``masakari-iim``: oslo.config sub-commands.

Each sub-command is an argparse sub-parser (through oslo.config's
:class:`cfg.SubCommandOpt`), so each has its own ``--help``; the config
options (``--config-file``, ``--config-dir``, the logging flags) belong
to the main parser. No sub-command runs the monitor, as ``masakari-iim
--config-file F`` always has.
"""
from __future__ import annotations

import argparse
import os

from oslo_config import cfg
from oslo_log import log as logging

from masakarimonitors_iim import conf as iim_conf

#: Where config arguments may also come: after the sub-command, as in
#: ``masakari-iim status --config-file F``.
CONFIG_ARGS = ("--config-file", "--config-dir")

_CONFIG_EPILOG = ("--config-file and --config-dir (see masakari-iim --help) may come "
                  "before or after the command.")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """The handler oslo.config calls with the sub-parsers."""
    subparsers.required = False     # no command: run the monitor
    subparsers.metavar = "COMMAND"

    def command(parent: argparse._SubParsersAction, name: str,
                summary: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=summary, description=description, epilog=_CONFIG_EPILOG)
        return parser

    command(subparsers, "run", "run the monitor in the foreground (the default)",
            "Run the monitor in the foreground until SIGTERM or SIGINT; SIGHUP "
            "reloads the policy file. The same as giving no command.")

    status = command(
        subparsers, "status", "what the monitor is doing: journal, probes, outbox",
        "Show every domain (journal state and since when, consecutive failures, "
        "each probe's last verdict and its age, graces) and every notification "
        "(attempts, Masakari's uuid and how far its engine got). Reads the journal "
        "read-only and the snapshot the running monitor writes beside it: safe "
        "while the monitor runs.")
    status.add_argument("--json", dest="as_json", action="store_true",
                        help="print JSON for scripts (a versioned shape, see "
                             "masakarimonitors_iim.status.render_json)")
    status.add_argument("domain", nargs="?", metavar="DOMAIN",
                        help="only this domain (uuid, name or Nova display name), "
                             "with each probe's reason and duration")

    policy = command(subparsers, "policy", "the policy applied to a domain",
                     "Look at the per-domain policy (policy file, config, Nova "
                     "metadata).")
    policy_actions = policy.add_subparsers(dest="policy_action", metavar="ACTION")
    policy_actions.required = True
    show = command(policy_actions, "show", "the effective policy of a running domain",
                   "Print the effective policy of a running domain and where each "
                   "value comes from. Asks libvirt for the domain.")
    show.add_argument("domain", metavar="DOMAIN", help="the domain's name or uuid")

    outbox = command(subparsers, "outbox", "the notifications owed to Masakari",
                     "List the notifications in the outbox, or send a dead letter "
                     "again.")
    outbox_actions = outbox.add_subparsers(dest="outbox_action", metavar="ACTION")
    outbox_actions.required = True
    listing = command(outbox_actions, "list", "every notification and its delivery",
                      "List the outbox, oldest first. Reads the journal database "
                      "read-only.")
    listing.add_argument("--status", dest="outbox_status",
                         choices=("pending", "delivered", "dead"),
                         help="only notifications in this delivery state")
    requeue = command(
        outbox_actions, "requeue", "send a dead letter again",
        "Put a dead notification (one Masakari refused) back into the queue, due "
        "at once; the running monitor sends it at its next outbox scan. Safe "
        "while the monitor runs.")
    requeue.add_argument("entry_id", type=int, metavar="ID",
                         help="the notification's id (the ID column of outbox list)")


COMMAND = cfg.SubCommandOpt("command", handler=add_commands, title="commands",
                            help="masakari-iim COMMAND --help describes each")


def config_args_first(argv: list[str]) -> list[str]:
    """Move ``--config-file``/``--config-dir`` (and their values) before
    the sub-command, keeping their order.

    They are options of the main parser; argparse's sub-parsers would
    refuse them after the command, and ``masakari-iim status
    --config-file F`` has always worked. Moved first, they also keep
    oslo.config's rule that later command-line flags override files.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in CONFIG_ARGS and i + 1 < len(argv):
            front += argv[i:i + 2]
            i += 2
            continue
        if arg.split("=", 1)[0] in CONFIG_ARGS and "=" in arg:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def parse(argv: list[str], conf: cfg.ConfigOpts) -> None:
    """Register the options, parse the command line and the config files,
    validate. Raises cfg.Error or ConfigError on a bad configuration;
    argparse exits (2, or 0 for --help) on a bad command line."""
    iim_conf.register_opts(conf)
    logging.register_options(conf)
    conf.register_cli_opt(COMMAND)
    default = iim_conf.DEFAULT_CONFIG_FILE
    defaults = [default] if os.path.exists(default) else []
    conf(config_args_first(argv), project="masakarimonitors", prog="masakari-iim",
         default_config_files=defaults)
    iim_conf.validate(conf)
