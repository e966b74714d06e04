"""The configuration the monitor acts on, read once from oslo.config.

The scheduler and its helpers take a plain frozen :class:`Settings`, not
the ConfigOpts object, so they can be built in tests without a config
file and never reach into option groups themselves.
"""
from __future__ import annotations

import dataclasses

from oslo_config import cfg
from oslo_log import log as logging

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim import policy as policy_mod
from masakarimonitors_iim.conf import options
from masakarimonitors_iim.guards.storm import StormSettings

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
    hostname: str
    defaults: policy_mod.Defaults
    journal_path: str
    disconnect_grace: float = 120.0
    policy_file: str | None = None
    notification_event: str = "LIFECYCLE"
    retry_interval: float = 10.0
    retry_max: int = 12
    max_retry_interval: float = 300.0
    duplicate_window: float = 180.0
    libvirt_uri: str = "qemu:///system"
    probe_workers: int = 4
    #: the upstream socket-path option is set (it is accepted, not used)
    sock_path_set: bool = False
    storm: StormSettings = StormSettings()
    #: seconds of I/O the activity guard looks back over
    activity_window: float = 120.0


def defaults_from_conf(conf: cfg.ConfigOpts) -> policy_mod.Defaults:
    """The config-file layer of every domain's policy."""
    group = conf[options.IIM_GROUP]
    return policy_mod.Defaults(
        interval=float(group.guest_monitoring_interval),
        timeout=float(group.guest_monitoring_timeout),
        failure_threshold=group.guest_monitoring_failure_threshold,
        success_threshold=group.guest_monitoring_success_threshold,
        startup_grace=float(group.guest_monitoring_startup_grace),
    )


def settings_from_conf(conf: cfg.ConfigOpts) -> Settings:
    group = conf[options.IIM_GROUP]
    return Settings(
        hostname=iim_conf.hostname(conf),
        defaults=defaults_from_conf(conf),
        journal_path=group.journal_path,
        disconnect_grace=float(group.agent_disconnect_grace),
        policy_file=group.policy_file or None,
        notification_event=group.notification_event,
        retry_interval=conf.callback.retry_interval,
        retry_max=conf.callback.retry_max,
        max_retry_interval=conf.callback.max_retry_interval,
        duplicate_window=conf.callback.duplicate_window,
        libvirt_uri=conf.libvirt.connection_uri,
        probe_workers=group.probe_workers,
        sock_path_set=group.qemu_guest_agent_sock_path != options.UPSTREAM_SOCK_PATH,
        storm=StormSettings(min_domains=group.storm_min_domains,
                            ratio=float(group.storm_ratio),
                            window=float(group.storm_window),
                            max_hold=float(group.storm_max_hold)),
        activity_window=float(group.activity_window),
    )


def load_policy_file(path: str | None, initial: bool) -> policy_mod.PolicyFile | None:
    """The host policy file, or None when none is configured. An invalid
    file stops the start (ConfigError); on a reload it is logged and None
    is returned, and the caller keeps the policy in force."""
    if not path:
        return None
    try:
        return policy_mod.load_policy_file(path)
    except policy_mod.PolicyError as exc:
        if initial:
            raise iim_conf.ConfigError(str(exc)) from None
        LOG.error("policy file rejected, previous policy stays in force: %s", exc)
        return None
