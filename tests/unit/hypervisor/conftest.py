"""Fixtures for the tests against libvirt's test driver (see hv_libvirt)."""
from __future__ import annotations

import libvirt
import pytest
from hv_libvirt import Domains, Events, FakeAgent, start

from masakarimonitors_iim.hypervisor import calls, eventloop


@pytest.fixture(scope="module", autouse=True)
def _event_impl_registered():
    # The test driver arms its event timer when a callback is registered;
    # make sure the default event implementation exists before any
    # connection in this module is opened.
    eventloop.acquire()
    eventloop.release()


@pytest.fixture(autouse=True)
def _no_bulk_stats(monkeypatch):
    """The bulk statistics call crashed the process (SIGSEGV inside the
    libvirt 9.0 client) when keepalive closed a hung libvirtd's
    connection under it (see hypervisor/stats.py): nothing may use it."""
    def refuse(*args, **kwargs):
        raise AssertionError("bulk domain statistics call")

    for name in ("getAllDomainStats", "domainListGetStats"):
        monkeypatch.setattr(libvirt.virConnect, name, refuse)


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def domains():
    d = Domains()
    yield d
    d.cleanup()


@pytest.fixture
def hv(events):
    h = start(events)
    assert h.wait_connected(5)
    yield h
    h.stop()


@pytest.fixture
def fake_agent(monkeypatch):
    fake = FakeAgent()
    monkeypatch.setattr(calls.libvirt_qemu, "qemuAgentCommand", fake)
    return fake
