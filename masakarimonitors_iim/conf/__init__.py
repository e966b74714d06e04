"""Configuration: one global ConfigOpts, as masakari-monitors has.

Sharing ``cfg.CONF`` lets masakari-monitors load this monitor in-process
through its ``introspectiveinstancemonitor_manager`` option. The options
both packages define are defined identically (:mod:`.upstream`), so they
register in either order and one config file means the same to both.
"""
from __future__ import annotations

import configparser
import glob
import os

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from masakarimonitors_iim.common.text import one_line
from masakarimonitors_iim.conf import options, upstream

CONF = cfg.CONF
DEFAULT_CONFIG_FILE = "/etc/masakarimonitors/masakarimonitors.conf"


class ConfigError(Exception):
    """A configuration problem, worded as one line naming option and fix."""


def register_opts(conf: cfg.ConfigOpts) -> None:
    for group, opts in options.registered_groups():
        for opt in opts:
            try:
                conf.register_opt(opt, group=None if group == "DEFAULT" else group)
            except cfg.DuplicateOptError:
                # Only a masakari-monitors release other than the one
                # conf/upstream.py copies defines it differently; it
                # registered first (it loads this monitor), so its
                # definition stands, and validate() still applies LIMITS.
                pass
    conf.set_default("auth_type", "password", group="api")


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator."""
    return options.groups()


def hostname(conf: cfg.ConfigOpts) -> str:
    """``[DEFAULT] hostname`` (``host``, its deprecated name, sets it too)."""
    return str(conf.hostname)


def validate(conf: cfg.ConfigOpts) -> None:
    """Fail at start-up, not at the first probe, on a bad value.

    oslo.config converts values lazily; reading each of our options here
    turns a typo into one clear line before anything starts. Unknown keys
    in the group this monitor owns are typos too (the other groups are
    shared with the other masakari monitors, so unknown keys there are
    someone else's).
    """
    _register_auth_plugin_opts(conf)
    for group, opts in options.groups():
        section = conf if group == "DEFAULT" else conf[group]
        for opt in opts:
            try:
                value = getattr(section, opt.dest)
                limit = upstream.LIMITS.get((group, opt.dest))
                if limit is not None and value is not None:
                    limit(value)
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


def _register_auth_plugin_opts(conf: cfg.ConfigOpts) -> None:
    """Register the options of the auth plugin ``[api] auth_type`` names,
    exactly as keystoneauth does when the notifier loads it (so that load
    finds equal definitions), but now: their values are checked at
    start-up and the secret ones are masked in the logged configuration.
    An unknown plugin is left to the notifier, which reports it and
    retries: a broken [api] must not stop the monitoring."""
    group = conf.api.auth_section or "api"
    try:
        auth_type = conf[group].auth_type
        if auth_type:
            conf.register_opts(ks_loading.get_auth_plugin_conf_options(auth_type),
                               group=group)
    except Exception:   # noqa: S110 - the notifier reports it, with the plugin's words
        pass


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
