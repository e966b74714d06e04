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
               help="Agent call slots: guest-agent calls (and so domains probed) "
                    "in flight at once on the monitor's libvirt connection; it "
                    "sizes both the worker threads and the hypervisor's call "
                    "slots. All but one may be held by domains whose last verdict "
                    "was not HEALTHY, so hung guests never delay healthy ones "
                    "(with 1, both share it); they confirm at most "
                    "(probe_workers - 1) x interval / timeout hung guests per "
                    "interval. libvirtd serves at most "
                    "max_client_requests (default 5) calls per connection at once "
                    "and max_workers (default 20) in all, shared with Nova: keep "
                    "this below max_client_requests, or raise that first (see "
                    "Sizing in the operations guide)."),
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
    cfg.IntOpt("storm_min_domains", default=3, min=0,
               help="Storm guard: while at least this many monitored domains "
                    "(and at least storm_ratio of them) failed within "
                    "storm_window seconds, the host, libvirt or storage is the "
                    "likely cause and every notification of this host is held "
                    "(the domains stay FAILING; a domain still failing when the "
                    "storm clears is reported then). 3 keeps two independent "
                    "failures on a small host notified. 0 turns the guard off."),
    cfg.FloatOpt("storm_ratio", default=0.5, min=0.0, max=1.0,
                 help="Storm guard: the share of this host's monitored domains "
                      "that must have failed within storm_window (besides "
                      "storm_min_domains) for notifications to be held."),
    cfg.IntOpt("storm_window", default=120, min=1,
               help="Storm guard: seconds within which failures count together, "
                    "and for which the condition must stay clear before held "
                    "notifications resume. Keep it above twice the longest "
                    "probe interval plus timeout, or a failing domain drops out "
                    "of the count between its rounds."),
    cfg.IntOpt("storm_max_hold", default=1800, min=1,
               help="Storm guard: seconds after which a hold releases the held "
                    "notifications by itself even if enough domains still "
                    "fail (guests hung by a host fault that has passed stay "
                    "hung until reset, and would otherwise be held forever). "
                    "One CRITICAL line says so; the released failures never "
                    "trip the guard again, only failures that begin later. "
                    "1800 gives an operator half an hour to act on the host "
                    "without leaving real failures running for hours."),
    cfg.IntOpt("activity_window", default=120, min=1,
               help="Activity guard: a failure that rests only on the guest "
                    "agent not answering is not notified while the guest read "
                    "or wrote at least 64 KiB on its disks or sent on its "
                    "network within the last this many seconds of the failure "
                    "streak (vSphere HA uses 120 s); it is notified once the "
                    "I/O has stopped for that long. Per VM, the policy's "
                    "corroborate: false turns the guard off."),
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
