"""Configuration: one global ConfigOpts, as masakari-monitors has.

Sharing ``cfg.CONF`` lets masakari-monitors load this monitor in-process
through its ``introspectiveinstancemonitor_manager`` option; options it
already registered under the same name are kept as they are.
"""
from __future__ import annotations

import configparser
import glob
import os

from oslo_config import cfg

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.conf import options

CONF = cfg.CONF
DEFAULT_CONFIG_FILE = "/etc/masakarimonitors/masakarimonitors.conf"


class ConfigError(Exception):
    """A configuration problem, worded as one line naming option and fix."""


def register_opts(conf: cfg.ConfigOpts) -> None:
    for group, opts in options.groups():
        for opt in opts:
            try:
                conf.register_opt(opt, group=None if group == "DEFAULT" else group)
            except cfg.DuplicateOptError:
                # Registered already by masakari-monitors with the same name
                # and meaning; its definition stands.
                pass
    conf.set_default("auth_type", "password", group="api")


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator."""
    return options.groups()


def hostname(conf: cfg.ConfigOpts) -> str:
    return conf.hostname or conf.host


def validate(conf: cfg.ConfigOpts) -> None:
    """Fail at start-up, not at the first probe, on a bad value.

    oslo.config converts values lazily; reading each of our options here
    turns a typo into one clear line before anything starts. Unknown keys
    in the group this monitor owns are typos too (the other groups are
    shared with the other masakari monitors, so unknown keys there are
    someone else's).
    """
    for group, opts in options.groups():
        section = conf if group == "DEFAULT" else conf[group]
        for opt in opts:
            try:
                getattr(section, opt.dest)
            except (cfg.ConfigFileValueError, ValueError) as exc:
                raise ConfigError("invalid value for [%s] %s: %s; fix it in %s"
                                  % (group, opt.name, one_line(exc),
                                     ", ".join(conf.config_file) or "the config file"))
            except cfg.NoSuchOptError:
                pass
    known = {opt.dest for opt in options.monitor_opts}
    for path in _config_files(conf):
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise ConfigError("cannot parse %s: %s" % (path, one_line(exc)))
        if parser.has_section(options.IIM_GROUP):
            for key in parser.options(options.IIM_GROUP):
                if key not in known and key not in parser.defaults():
                    raise ConfigError(
                        "unknown option [%s] %s in %s; check its spelling "
                        "(known: %s)" % (options.IIM_GROUP, key, path,
                                         ", ".join(sorted(known))))
    _check_notifier(conf)


def _check_notifier(conf: cfg.ConfigOpts) -> None:
    from stevedore import extension

    from masakarimonitors_iim.notifier.base import NAMESPACE
    name = conf[options.IIM_GROUP].notifier
    names = extension.ExtensionManager(NAMESPACE, invoke_on_load=False).names()
    if name not in names:
        raise ConfigError("unknown [%s] notifier %r; use one of: %s"
                          % (options.IIM_GROUP, name, ", ".join(sorted(names))))


def _config_files(conf: cfg.ConfigOpts) -> list[str]:
    files = list(conf.config_file or [])
    if conf.config_dir:
        files.extend(sorted(glob.glob(os.path.join(conf.config_dir, "*.conf"))))
    return files
