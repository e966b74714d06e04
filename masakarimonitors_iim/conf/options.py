"""Option definitions, grouped as masakari-monitors groups them.

Upstream names keep their upstream meaning so this monitor can read the
masakari-monitors config file unchanged; options new to this project
live in the same groups with names that say what they do. The options
masakari-monitors defines too are its own definitions (:mod:`.upstream`),
so both packages can register them on one ConfigOpts.
"""
from __future__ import annotations

import copy

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from masakarimonitors_iim.conf import upstream

DEFAULT_JOURNAL = "/var/lib/masakarimonitors/iim-journal.sqlite"
UPSTREAM_SOCK_PATH = upstream.SOCK

IIM_GROUP = upstream.IIM_GROUP

# [DEFAULT] hostname: this host's name in Masakari's failover segment
# (``host``, its deprecated name, still works, as in masakari-monitors).
service_opts: list[cfg.Opt] = [upstream.HOSTNAME]

monitor_opts: list[cfg.Opt] = [
    # upstream options, as upstream defines them (see conf/upstream.py):
    # guest_monitoring_interval, _timeout (also set as each domain's agent
    # response timeout), _failure_threshold, and qemu_guest_agent_sock_path
    # (accepted, unused: domains are found by their agent channel name).
    *upstream.MONITOR_OPTS,
    # options of this project ----------------------------------------------
    cfg.IntOpt("guest_monitoring_success_threshold", default=1, min=1,
               help="Consecutive healthy rounds before a new, failing or "
                    "reported guest counts as healthy again."),
    cfg.IntOpt("guest_monitoring_startup_grace", default=0, min=0,
               help="Seconds after a domain starts during which failed rounds "
                    "are not counted."),
    cfg.IntOpt("agent_disconnect_grace", default=120, min=0,
               help="Seconds after the guest agent disconnects (or after "
                    "monitoring of a domain begins) during which 'agent not "
                    "connected' is UNKNOWN rather than FAILED: the agent goes "
                    "first when a guest shuts down or reboots, and a slow "
                    "shutdown must not be restarted. A hung agent or guest "
                    "(no answer on a connected channel) is not affected."),
    cfg.IntOpt("probe_workers", default=4, min=1, max=64,
               help="Domains probed at the same time. libvirtd serves at most "
                    "max_client_requests (default 5) calls per connection at once, "
                    "so keep this below that value."),
    cfg.StrOpt("journal_path", default=DEFAULT_JOURNAL,
               help="SQLite file holding each domain's state and the "
                    "notification outbox. Must survive reboots of the host."),
    cfg.StrOpt("policy_file",
               help="YAML host policy file: which probes to run on which "
                    "domains, and how patiently. Reloaded on SIGHUP."),
    cfg.StrOpt("notifier", default="masakari",
               help="Notifier driver (masakarimonitors_iim.notifiers entry "
                    "point): 'masakari' sends to Masakari, 'log' only logs."),
    cfg.StrOpt("notification_event", default="LIFECYCLE",
               choices=[("LIFECYCLE", "payload event LIFECYCLE, understood by "
                                      "every Masakari release"),
                        ("QEMU_GUEST_AGENT_ERROR", "payload event understood by "
                                                   "newer Masakari releases")],
               help="Value of the notification payload's 'event' key; "
                    "vir_domain_event is always STOPPED_FAILED."),
    cfg.PortOpt("metrics_port", default=0,
                help="TCP port of the Prometheus metrics endpoint (/metrics): "
                     "domains by journal state, probe latency, verdicts, "
                     "notifications, outbox depth and age, libvirt connection. "
                     "0 turns the endpoint off."),
    cfg.HostAddressOpt("metrics_host", default="127.0.0.1",
                       help="Address the metrics endpoint listens on. The "
                            "metrics carry no secrets but do name domain "
                            "states; listen beyond localhost only on a "
                            "management network."),
]

callback_opts: list[cfg.Opt] = [
    # retry_max: attempts after which an undelivered notification is reported
    # overdue (unlike upstream, it is never dropped); retry_interval: seconds
    # before the first retry, doubled (with jitter) up to max_retry_interval.
    *upstream.CALLBACK_OPTS,
    cfg.IntOpt("max_retry_interval", default=300, min=1,
               help="Longest wait between two delivery attempts, in seconds."),
    cfg.IntOpt("duplicate_window", default=180, min=0,
               help="Masakari's duplicate_notification_detection_interval: a "
                    "new failure of an instance within this many seconds of "
                    "its previous notification is refused by Masakari as a "
                    "duplicate, so it is re-sent, with a new generated_time, "
                    "once the window has passed."),
]

libvirt_opts: list[cfg.Opt] = list(upstream.LIBVIRT_OPTS)

api_opts: list[cfg.Opt] = list(upstream.API_OPTS)


def api_registered_opts() -> list[cfg.Opt]:
    """[api] as registered: upstream's options, keystoneauth's session
    options and auth_type / auth_section, as masakari-monitors registers
    them. Not the auth plugin's own options: keystoneauth registers those
    itself, with its definitions, when it loads the plugin ``auth_type``
    names, and a different definition registered before (even one only
    not ``required``) makes that load fail with DuplicateOptError."""
    return (api_opts
            + ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options())


def api_group_opts() -> list[cfg.Opt]:
    """[api] as documented: :func:`api_registered_opts` plus the password
    plugin's options, so the sample config shows both a noauth endpoint
    (auth_type = none, endpoint = ...) and password auth."""
    password_opts = []
    for opt in ks_loading.get_auth_plugin_conf_options("password"):
        # Required only when auth_type is password; keystoneauth checks that
        # itself when it loads the plugin, so parsing must not insist.
        opt = copy.copy(opt)
        opt.required = False
        password_opts.append(opt)
    return api_registered_opts() + password_opts


def groups() -> list[tuple[str, list[cfg.Opt]]]:
    """Every option, for the sample config and the documentation."""
    return [(group, api_group_opts() if group == "api" else opts)
            for group, opts in registered_groups()]


def registered_groups() -> list[tuple[str, list[cfg.Opt]]]:
    """The options registered at start-up (``conf.register_opts``)."""
    return [
        ("DEFAULT", service_opts),
        (IIM_GROUP, monitor_opts),
        ("callback", callback_opts),
        ("libvirt", libvirt_opts),
        ("api", api_registered_opts()),
    ]
