"""The process's one libvirt event loop, run in a daemon thread.

libvirt needs an event loop for domain events, close callbacks and
keepalive, and it must be registered before the first connection is
opened and only once per process. Several connections (tests
make many) share it: the first ``acquire`` starts the thread, the last
``release`` stops it.
"""
from __future__ import annotations

import threading
from typing import Callable

import libvirt
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: virEventRunDefaultImpl blocks until something happens; a periodic timer
#: makes it return at least this often so the thread sees a stop request.
TICK_MS = 250

_lock = threading.Lock()
_registered = False
_users = 0
_runner: "_Runner | None" = None


class _Runner:
    """One run of the loop; a new one is made after a full stop so a
    thread that is slow to exit never sees the next run's stop flag."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="libvirt-events", daemon=True)

    def _run(self) -> None:
        tick = libvirt.virEventAddTimeout(TICK_MS, _noop_timer, None)
        failing = False
        try:
            while not self.stopping.is_set():
                try:
                    libvirt.virEventRunDefaultImpl()
                    if failing:
                        LOG.info("libvirt event loop is running again")
                        failing = False
                except Exception:
                    if not failing:
                        LOG.exception("libvirt event loop iteration failed; retrying")
                        failing = True
                    self.stopping.wait(0.5)
        finally:
            libvirt.virEventRemoveTimeout(tick)


def _noop_timer(timer: int, opaque: object) -> None:
    """Its only job is to make virEventRunDefaultImpl return."""


def _ignore_libvirt_error(ctx: object, err: object) -> None:
    """libvirt prints every error to stderr unless a handler is set; the
    callers see each error as an exception and log it themselves."""


def acquire() -> None:
    """Make sure the event loop runs; pair with :func:`release`."""
    global _registered, _users, _runner
    with _lock:
        if not _registered:
            libvirt.registerErrorHandler(_ignore_libvirt_error, None)
            libvirt.virEventRegisterDefaultImpl()
            _registered = True
        _users += 1
        if _runner is None:
            _runner = _Runner()
            _runner.thread.start()


def release(timeout: float = 1.0) -> None:
    """Drop one user; the last one stops the thread (waiting at most
    ``timeout`` seconds, the thread is a daemon either way)."""
    global _users, _runner
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users or _runner is None:
            return
        runner, _runner = _runner, None
        runner.stopping.set()
    _wake()
    if runner.thread is not threading.current_thread():
        runner.thread.join(timeout)


def running() -> bool:
    with _lock:
        return _runner is not None


def call_soon(func: Callable[[], None]) -> bool:
    """Run ``func`` once on the event-loop thread, after what is queued.

    Lets connection-level events reach the consumer from the same thread
    as domain events, so it never sees two of them at once. Returns False
    (and does not run ``func``) when the loop is not running.
    """
    if not running():
        return False

    def fire(timer: int, opaque: object) -> None:
        libvirt.virEventRemoveTimeout(timer)
        func()

    libvirt.virEventAddTimeout(0, fire, None)
    return True


def _wake() -> None:
    def fire(timer: int, opaque: object) -> None:
        libvirt.virEventRemoveTimeout(timer)

    try:
        libvirt.virEventAddTimeout(0, fire, None)
    except libvirt.libvirtError:
        pass
