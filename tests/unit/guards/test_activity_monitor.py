"""The activity guard wired into the monitor, with the hypervisor fake:
an agent-only failure of a guest still writing is held, then reported
once the writing stops; with corroborate: false it is reported at once."""
from __future__ import annotations

from masakarimonitors_iim.hypervisor.types import Activity, ErrorKind
from masakarimonitors_iim.journal.machine import State
from tests.unit.test_monitor import A, Rig, conf  # noqa: F401  (conf: fixture)

MIB = 1024 * 1024


def one_round(rig: Rig, written: int) -> None:
    rig.hv.activity[A] = Activity(cpu_ns=0, block_bytes=written, net_bytes=0, at=rig.clock.t)
    rig.rounds(1)


def test_held_while_the_guest_writes_then_reported_once(conf):  # noqa: F811
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(2)
    assert rig.state(A) is State.HEALTHY
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    written = 0
    for _ in range(8):                  # 80 s of failed rounds, writing
        written += MIB
        one_round(rig, written)
    rec = rig.journal.get(A)
    assert rec.state is State.FAILING, rec
    assert rec.held.startswith("agent failed, guest active: 7168 KiB disk and 0 KiB network "
                               "I/O in the last 70 s"), rec.held
    assert rig.notifier.sent == []
    assert rig.hv.activity_calls.count(A) == 8      # one sample per failed round
    # The writing stops: reported once the 120 s window sees none.
    for _ in range(11):
        one_round(rig, written)
        assert rig.notifier.sent == []
    one_round(rig, written)
    assert rig.state(A) is State.REPORTED
    assert len(rig.notifier.sent) == 1


def test_corroborate_false_reports_at_the_threshold(conf, tmp_path):  # noqa: F811
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: all\n    probes: [ping]\n"
                      "    corroborate: false\n")
    conf.set_override("policy_file", str(policy), group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(2)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    for i in range(3):
        one_round(rig, (i + 1) * MIB)
    assert rig.state(A) is State.REPORTED
    assert len(rig.notifier.sent) == 1
    assert rig.hv.activity_calls == []


def test_no_counters_read_once_the_episode_is_reported(conf):  # noqa: F811
    """A guest already reported counts FAILED rounds but never reports
    again: corroborating them would cost a libvirt call per interval for
    nothing."""
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.rounds(3)
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    rig.rounds(3)
    assert rig.state(A) is State.REPORTED
    assert rig.hv.activity_calls.count(A) == 3      # while a report could come
    rig.rounds(5)
    assert rig.hv.activity_calls.count(A) == 3      # none once reported


def test_a_boot_never_seen_answering_keeps_its_io_history(conf, tmp_path):  # noqa: F811
    """No qemu-ga yet, not reportable under boot_report: seen-before; a
    reload to boot_report: always makes it reportable at once, and the
    activity guard must then have the I/O history to hold a guest that is
    clearly working (a review found it reported with none)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: all\n    probes: [ping]\n"
                      "    boot_deadline: 60\n")
    conf.set_override("policy_file", str(policy), group="introspectiveinstancemonitor")
    rig = Rig(conf)
    rig.hv.add(A, "vm-a")
    rig.hv.behaviour[A] = ErrorKind.AGENT_TIMEOUT
    written = 0
    for _ in range(12):
        written += MIB
        one_round(rig, written)
    assert rig.state(A) is State.DISCOVERY
    policy.write_text("version: 1\nrules:\n  - name: all\n    probes: [ping]\n"
                      "    boot_deadline: 60\n    boot_report: always\n")
    rig.mon.reload()
    rig.wall.offset += 120.0            # past the 60 s boot deadline
    written += MIB
    one_round(rig, written)
    assert rig.notifier.sent == []
    rec = rig.journal.get(A)
    assert rec.held.startswith("agent failed, guest active"), rec
