"""A Manager-compatible face for masakari-monitors.

masakari-monitors builds its introspective monitor from the class named
in ``[DEFAULT] introspectiveinstancemonitor_manager`` with ``host=`` and
drives it with init_host / main / stop / reset. Pointing that option at
``masakarimonitors_iim.manager.IntrospectiveInstanceMonitorManager``
runs this implementation instead, with the same config file.
"""
from __future__ import annotations

import threading
from typing import Any

from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.monitor.service import Monitor
from masakarimonitors_iim.monitor.wiring import build_monitor

iim_conf.register_opts(iim_conf.CONF)


class IntrospectiveInstanceMonitorManager:
    def __init__(self, host: str | None = None, service_name: str = "introspectiveinstancemonitor",
                 *args: Any, conf: cfg.ConfigOpts | None = None, **kwargs: Any) -> None:
        self.host = host
        self.service_name = service_name
        self.conf = conf or iim_conf.CONF
        self._monitor: Monitor | None = None
        self._stopped = threading.Event()

    def init_host(self) -> None:
        """Check the configuration and open the journal before anything
        starts, so a bad setting fails here, in the caller's thread."""
        iim_conf.validate(self.conf)
        self._monitor = build_monitor(self.conf)

    def main(self) -> None:
        """Run until stop() is called."""
        if self._monitor is None:
            self.init_host()
        assert self._monitor is not None
        self._monitor.start()
        self._stopped.wait()

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
        self._stopped.set()

    def reset(self) -> None:
        """SIGHUP in masakari-monitors: reload the policy file."""
        if self._monitor is not None:
            self._monitor.reload()
