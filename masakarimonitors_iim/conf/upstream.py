"""The options masakari-monitors defines too, exactly as it defines them.

masakari-monitors registers its options on the global ``cfg.CONF`` and
loads this monitor into the same process (``[DEFAULT]
introspectiveinstancemonitor_manager``). oslo.config accepts a second
registration of a name only when the two definitions are equal in every
attribute (type, default, help text, deprecated names); otherwise the one
that comes second raises DuplicateOptError. So each option below is a
copy of masakari-monitors 22.0.0's definition (``masakarimonitors/conf/``),
help text included, and either package may register first. The drop-in
end-to-end test registers both packages' options into one ConfigOpts, in
both orders, and fails on any difference.

Two consequences:

* what this monitor needs beyond upstream's definition (a lower bound,
  which upstream does not set) is in :data:`LIMITS`, checked by
  ``conf.validate`` whichever package registered the option;
* where an option means more here than its upstream help says (a
  notification is never dropped after ``retry_max``; the socket path
  regular expression is accepted and unused), README.rst says so, and the
  monitor logs it at start-up.
"""
from __future__ import annotations

import socket

from oslo_config import cfg, types

IIM_GROUP = "introspectiveinstancemonitor"

#: Upstream's default: a regular expression there; accepted and unused here.
SOCK = r'/var/lib/libvirt/qemu/org\.qemu\.guest_agent\..*\.instance-.*\.sock'

#: ``[DEFAULT] hostname``; ``host`` is its deprecated name, as upstream.
HOSTNAME = cfg.StrOpt('hostname',
                      default=socket.gethostname(),
                      deprecated_name="host",
                      sample_default='<HOSTNAME>',
                      help='''
Hostname, FQDN or IP address of this host. Must be valid within AMQP key.

Possible values:

* String with hostname, FQDN or IP address. Default is hostname of this host.
''')

MONITOR_OPTS: list[cfg.Opt] = [
    cfg.IntOpt('guest_monitoring_interval',
               default=10,
               help='''
Guest monitoring interval of VM status (in seconds).
* The value should not be too low as there should not be false negative
* for reporting QEMU_GUEST_AGENT failures
* VM needs time to do powering-off.
* guest_monitoring_interval should be greater than
* the time to SHUTDOWN VM gracefully.
* e.g. | 565da9ba-3c0c-4087-83ca | iim1 | ACTIVE | powering-off | Running
'''),
    cfg.IntOpt('guest_monitoring_timeout',
               default=2,
               help='Guest monitoring timeout (in seconds).'),
    cfg.IntOpt('guest_monitoring_failure_threshold',
               default=3,
               help='Failure threshold before sending notification.'),
    cfg.StrOpt('qemu_guest_agent_sock_path',
               default=SOCK,
               help=r'''
* The file path of qemu guest agent sock.
* Please use Python raw string notation as regular expressions.
  e.g.  r'/var/lib/libvirt/qemu/org\.qemu\.guest_agent\..*\.instance-.*\.sock'
'''),
]

CALLBACK_OPTS: list[cfg.Opt] = [
    cfg.IntOpt('retry_max',
               default=12,
               help='Number of retries when the notification processing'
                    ' is error.'),
    cfg.IntOpt('retry_interval',
               default=10,
               help='Trial interval of time of the notification processing'
                    ' is error(in seconds).'),
]

LIBVIRT_OPTS: list[cfg.Opt] = [
    cfg.StrOpt('connection_uri',
               default='qemu:///system',
               help='Override the default libvirt URI.'),
]

API_OPTS: list[cfg.Opt] = [
    cfg.StrOpt('region',
               default='RegionOne',
               help='Region name.'),
    cfg.StrOpt('api_version',
               default='v1',
               help='Masakari API Version.'),
    cfg.StrOpt('api_interface',
               default='public',
               choices=('public', 'internal', 'admin'),
               help='Interface of endpoint.'),
]

#: Bounds this monitor needs on upstream's options (upstream sets none): an
#: interval, timeout or threshold of 0 would spin or never notify.
LIMITS: dict[tuple[str, str], types.Integer] = {
    (IIM_GROUP, "guest_monitoring_interval"): types.Integer(min=1),
    (IIM_GROUP, "guest_monitoring_timeout"): types.Integer(min=1),
    (IIM_GROUP, "guest_monitoring_failure_threshold"): types.Integer(min=1),
    ("callback", "retry_max"): types.Integer(min=0),
    ("callback", "retry_interval"): types.Integer(min=1),
}
