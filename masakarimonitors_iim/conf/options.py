"""Option definitions, grouped as masakari-monitors groups them.

Upstream names keep their upstream meaning so this monitor can read the
masakari-monitors config file unchanged; options new to this project
live in the same groups with names that say what they do.
"""
from __future__ import annotations

import copy
import socket

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

DEFAULT_JOURNAL = "/var/lib/masakarimonitors/iim-journal.sqlite"
UPSTREAM_SOCK_PATH = r"/var/lib/libvirt/qemu/org\.qemu\.guest_agent\..*\.instance-.*\.sock"

IIM_GROUP = "introspectiveinstancemonitor"

service_opts: list[cfg.Opt] = [
    cfg.StrOpt("host", default=socket.gethostname(),
               sample_default="<hostname>",
               help="Name of this host, as masakari-monitors uses it. Used as the "
                    "notification's hostname unless [DEFAULT] hostname is set."),
    cfg.StrOpt("hostname",
               help="Name of this compute host as Masakari knows it (its host in "
                    "the failover segment). Defaults to [DEFAULT] host."),
]

monitor_opts: list[cfg.Opt] = [
    # upstream options -----------------------------------------------------
    cfg.IntOpt("guest_monitoring_interval", default=10, min=1,
               help="Seconds between two probe rounds of one domain."),
    cfg.IntOpt("guest_monitoring_timeout", default=2, min=1,
               help="Seconds one guest-agent call may take before the guest "
                    "counts as not answering. Set as the domain's agent response "
                    "timeout too, so a hung agent never costs more than this."),
    cfg.IntOpt("guest_monitoring_failure_threshold", default=3, min=1,
               help="Consecutive failed probe rounds of a healthy guest before "
                    "one notification is sent."),
    cfg.StrOpt("qemu_guest_agent_sock_path", default=UPSTREAM_SOCK_PATH,
               help="Accepted for compatibility with masakari-monitors and not "
                    "used: domains are found by their guest agent channel name "
                    "(org.qemu.guest_agent.0), whatever their socket path."),
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
]

callback_opts: list[cfg.Opt] = [
    cfg.IntOpt("retry_max", default=12, min=0,
               help="Delivery attempts after which an undelivered notification "
                    "is reported as overdue (one ERROR log, and in status). "
                    "Unlike masakari-monitors, the notification is never "
                    "dropped: retries go on at max_retry_interval."),
    cfg.IntOpt("retry_interval", default=10, min=1,
               help="Seconds before the first retry of a failed delivery; each "
                    "further retry waits twice as long (with jitter), up to "
                    "max_retry_interval."),
    cfg.IntOpt("max_retry_interval", default=300, min=1,
               help="Longest wait between two delivery attempts, in seconds."),
    cfg.IntOpt("duplicate_window", default=180, min=0,
               help="Masakari's duplicate_notification_detection_interval: a "
                    "new failure of an instance within this many seconds of "
                    "its previous notification is refused by Masakari as a "
                    "duplicate, so it is re-sent, with a new generated_time, "
                    "once the window has passed."),
]

libvirt_opts: list[cfg.Opt] = [
    cfg.StrOpt("connection_uri", default="qemu:///system",
               help="libvirt URI of the local hypervisor."),
]

api_opts = [
    cfg.StrOpt("region", default="RegionOne", help="Region name."),
    cfg.StrOpt("api_version", default="v1", help="Masakari API version."),
    cfg.StrOpt("api_interface", default="public", help="Interface of the endpoint."),
]


def api_group_opts() -> list[cfg.Opt]:
    """[api]: upstream options plus keystoneauth's, so both a noauth
    endpoint (auth_type = none, endpoint = ...) and password auth work."""
    password_opts = []
    for opt in ks_loading.get_auth_plugin_conf_options("password"):
        # Required only when auth_type is password; keystoneauth checks that
        # itself when it loads the plugin, so parsing must not insist.
        opt = copy.copy(opt)
        opt.required = False
        password_opts.append(opt)
    return (api_opts
            + ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options()
            + password_opts)


def groups() -> list[tuple[str, list[cfg.Opt]]]:
    return [
        ("DEFAULT", service_opts),
        (IIM_GROUP, monitor_opts),
        ("callback", callback_opts),
        ("libvirt", libvirt_opts),
        ("api", api_group_opts()),
    ]
