"""Replaced connections are closed only once no call waits on them
(hypervisor.replaced)."""
from __future__ import annotations

import logging
import threading

import hv_recorded
import pytest
from hv_libvirt import LOGGER, messages

from masakarimonitors_iim.hypervisor.ledger import CallLedger
from masakarimonitors_iim.hypervisor.replaced import ReplacedConnections, close_quietly

URI = "qemu+tcp://host/system"


class Conn:
    """Records what closing it did; ``error`` makes every step fail as
    on a dead connection."""

    def __init__(self, error=None) -> None:
        self.error = error
        self.steps: list[object] = []

    def _step(self, what) -> None:
        self.steps.append(what)
        if self.error is not None:
            raise self.error

    def domainEventDeregisterAny(self, callback_id):
        self._step(callback_id)

    def unregisterCloseCallback(self):
        self._step("unregister")

    def close(self):
        self._step("close")


@pytest.fixture
def rig():
    calls = CallLedger()
    return calls, ReplacedConnections(URI, threading.Condition(), calls)


def test_without_calls_it_is_closed_at_once(rig, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    calls, replaced = rig
    conn = Conn()
    replaced.close(conn, [3, 4])
    assert conn.steps == [3, 4, "unregister", "close"]
    assert not replaced.holds(conn)
    assert messages(caplog, "still wait", logging.INFO) == []


def test_nothing_to_close():
    ReplacedConnections(URI, threading.Condition(), CallLedger()).close(None, [])


def test_with_calls_waiting_it_is_closed_once_the_last_returns(rig, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    calls, replaced = rig
    conn, other = Conn(), Conn()
    first, second = calls.begin(conn, 1.0), calls.begin(conn, 2.0)
    calls.begin(other, 2.0)                           # another connection's call
    replaced.close(conn, [7])
    assert conn.steps == []
    assert replaced.holds(conn) and not replaced.holds(other)
    assert messages(caplog, "still wait", logging.INFO) == [
        "2 libvirt call(s) still wait on the replaced connection to %s; it is closed "
        "once they return" % URI]

    calls.end(first, 3.0)
    replaced.close_returned()
    assert conn.steps == [] and replaced.holds(conn)
    calls.end(second, 4.0)
    replaced.close_returned()
    assert conn.steps == [7, "unregister", "close"]
    assert not replaced.holds(conn)
    replaced.close_returned()                         # closed once only
    assert conn.steps == [7, "unregister", "close"]


class SpyLedger(CallLedger):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[object] = []

    def forget(self, conn) -> None:
        self.forgotten.append(conn)
        super().forget(conn)


@pytest.mark.parametrize("waiting", [False, True])
def test_a_closed_connection_is_forgotten_by_the_ledger(waiting):
    """Else the ledger would keep every closed connection for good."""
    calls = SpyLedger()
    replaced = ReplacedConnections(URI, threading.Condition(), calls)
    conn = Conn()
    token = calls.begin(conn, 1.0)
    if not waiting:
        calls.end(token, 2.0)
    replaced.close(conn, [])
    assert calls.forgotten == ([] if waiting else [conn])
    if waiting:
        calls.end(token, 2.0)
        replaced.close_returned()
        assert calls.forgotten == [conn]
    assert conn.steps == ["unregister", "close"]


def test_close_quietly_tries_every_step_on_a_dead_connection():
    conn = Conn(error=hv_recorded.libvirt_error(*hv_recorded.SOCKET_CLOSED))
    close_quietly(conn, [1, 2])
    assert conn.steps == [1, 2, "unregister", "close"]
