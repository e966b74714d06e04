"""Fixtures for the tests against libvirt's test driver (see hv_libvirt)."""
from __future__ import annotations

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
