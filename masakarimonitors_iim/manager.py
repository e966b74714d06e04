"""A Manager-compatible face for masakari-monitors.

masakari-monitors builds its introspective monitor from the class named
in ``[DEFAULT] introspectiveinstancemonitor_manager`` with ``host=`` and
drives it with init_host / main / stop / reset. Pointing that option at
``masakarimonitors_iim.manager.IntrospectiveInstanceMonitorManager``
runs this implementation instead, with the same config file.

Why main() must not hold the main thread there
----------------------------------------------

``masakari-introspectiveinstancemonitor`` (masakari-monitors 22.0.0) runs
the manager under oslo.service's ``ServiceLauncher`` with its default
eventlet backend, *without* monkey-patching: ``threading``, ``time`` and
``select`` stay real, so this monitor's threads are real threads, and
``Service.start()`` (init_host, then main) runs in a green thread on the
process's main thread, the thread of the eventlet hub. oslo.service's
signal handler does not stop anything itself: it spawns a green thread to
do it, which runs only when the main thread gets back to the hub. A
main() blocked in a real ``Event.wait()`` never gives it back, so SIGTERM
was accepted and ignored until something killed the process (15 s in the
report). Returning from main() at once is not enough either: the idle hub
then sleeps in a real ``time.sleep(60)`` that a signal does not cut short
(oslo.service's EINTR trick recognises only its own sleep and the hub's
poll), so SIGTERM took up to 60 s.

So, on the main thread, main() waits until the monitor is stopped or the
process receives a signal, and then returns: the launcher's green thread
runs at once, and calls stop() (SIGTERM), or stop(), reset(), init_host()
and main() again (SIGHUP, when daemonised). It learns of a signal through
``signal.set_wakeup_fd``, which tells without replacing anyone's handler:
the signals stay the launcher's. On any other thread (``masakari-iim``
runs main() in a thread of its own) main() blocks until stop(). No
eventlet here.
"""
from __future__ import annotations

import os
import select
import signal
import threading
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.monitor.service import Monitor
from masakarimonitors_iim.monitor.wiring import build_monitor

iim_conf.register_opts(iim_conf.CONF)

LOG = logging.getLogger(__name__)
#: How often a waiting main() looks at the stop flag.
WAIT_SLICE = 0.5


class SignalWakeup:
    """A pipe Python writes the number of each caught signal to.

    Created on the main thread only (``signal.set_wakeup_fd`` demands it).
    Armed in init_host(), before the monitor is built and started, so a
    signal that arrives meanwhile still ends the wait in main(); closed by
    main() or, if main() ran elsewhere, by stop() on the main thread.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        #: False when someone else already listens this way (an asyncio loop
        #: on the main thread, say): theirs is put back, and wait() does not
        #: wait at all rather than hold a main thread it cannot watch.
        self.armed = previous == -1
        if not self.armed:
            signal.set_wakeup_fd(previous)
            LOG.warning("the main thread's signal wakeup fd is in use: main() returns "
                        "at once instead of waiting for a signal or stop()")

    def wait(self, stopped: threading.Event) -> list[int]:
        """Until a signal arrives (return their numbers) or ``stopped``."""
        while self.armed and not stopped.is_set():
            ready, _, _ = select.select([self._read], [], [], WAIT_SLICE)
            if ready:
                try:
                    return list(os.read(self._read, 64))
                except BlockingIOError:   # drained meanwhile: go on waiting
                    continue
        return []

    def close(self) -> None:
        """Give the wakeup fd back; main thread only, like set_wakeup_fd."""
        if self.armed:
            signal.set_wakeup_fd(-1)
            self.armed = False
        os.close(self._read)
        os.close(self._write)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class IntrospectiveInstanceMonitorManager:
    def __init__(self, host: str | None = None, service_name: str = "introspectiveinstancemonitor",
                 *args: Any, conf: cfg.ConfigOpts | None = None, **kwargs: Any) -> None:
        self.host = host
        self.service_name = service_name
        self.conf = conf or iim_conf.CONF
        self._monitor: Monitor | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()      # a stop() never overtakes a start()
        self._wakeup: SignalWakeup | None = None

    def init_host(self) -> None:
        """Check the configuration and open the journal before anything
        starts, so a bad setting fails here, in the caller's thread.

        Called again after stop() when oslo.service restarts the service
        (SIGHUP): a new monitor on the same journal."""
        if _on_main_thread() and self._wakeup is None:
            self._wakeup = SignalWakeup()
        self._stopped.clear()
        iim_conf.validate(self.conf)
        self._monitor = build_monitor(self.conf)

    def main(self) -> None:
        """Start the monitor; wait until stop() or, on the main thread, until
        a signal arrives (see the module docstring for why)."""
        if self._monitor is None:
            self.init_host()
        assert self._monitor is not None
        with self._lock:
            if self._stopped.is_set():      # stopped before it started
                return
            self._monitor.start()
        if not _on_main_thread():
            while not self._stopped.wait(WAIT_SLICE):
                pass
            return
        wakeup, self._wakeup = self._wakeup or SignalWakeup(), None
        try:
            signals = wakeup.wait(self._stopped)
        finally:
            wakeup.close()
        if signals:
            LOG.info("signal %s received: returning to the service launcher, which "
                     "handles it", ", ".join(str(s) for s in signals))

    def stop(self) -> None:
        with self._lock:
            if self._monitor is not None:
                self._monitor.stop()
            self._stopped.set()     # after: main() returns once it is all stopped
        if self._wakeup is not None and _on_main_thread():
            self._wakeup.close()
            self._wakeup = None

    def reset(self) -> None:
        """SIGHUP in masakari-monitors: reload the policy file (oslo.service
        calls it between stop() and a new init_host(), when it does nothing)."""
        if self._monitor is not None and not self._stopped.is_set():
            self._monitor.reload()
