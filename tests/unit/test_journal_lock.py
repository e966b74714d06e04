"""One monitor per journal: the lock beside the journal file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf
from masakarimonitors_iim.monitor.lock import JournalLock, JournalLocked, lock_path
from masakarimonitors_iim.monitor.wiring import build_monitor


def test_second_holder_is_refused_with_the_journal_and_the_pid(tmp_path):
    journal = str(tmp_path / "state" / "journal.sqlite")
    first = JournalLock(journal)
    first.acquire()                      # creates the directory, as the database would
    with pytest.raises(JournalLocked) as info:
        JournalLock(journal).acquire()   # another open file: flock conflicts
    message = str(info.value)
    assert "\n" not in message
    assert journal in message and "pid %d" % os.getpid() in message
    assert "ps -o pid,args -p %d" % os.getpid() in message
    assert "journal_path" in message     # the way out
    first.release()
    again = JournalLock(journal)
    again.acquire()
    again.release()
    assert os.path.exists(lock_path(journal))   # never deleted, see the module


def test_a_holder_that_died_leaves_nothing_behind(tmp_path):
    """SIGKILL, OOM: the kernel drops the lock with the process."""
    journal = str(tmp_path / "journal.sqlite")
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from masakarimonitors_iim.monitor.lock import JournalLock\n"
         "JournalLock(sys.argv[1]).acquire()\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n", journal], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(JournalLocked) as info:
            JournalLock(journal).acquire()
        assert "pid %d" % child.pid in str(info.value)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    lock = JournalLock(journal)
    lock.acquire()
    assert open(lock_path(journal)).read().strip() == str(os.getpid())
    lock.release()


def test_holder_without_a_pid_yet_is_still_named_a_way(tmp_path):
    journal = str(tmp_path / "journal.sqlite")
    first = JournalLock(journal)
    first.acquire()
    open(lock_path(journal), "w").close()    # as between its flock and its write
    with pytest.raises(JournalLocked) as info:
        JournalLock(journal).acquire()
    assert "fuser -v %s" % lock_path(journal) in str(info.value)
    first.release()


def test_release_is_idempotent_and_acquire_too(tmp_path):
    lock = JournalLock(str(tmp_path / "journal.sqlite"))
    lock.acquire()
    lock.acquire()
    assert lock.held
    lock.release()
    lock.release()
    assert not lock.held


def test_build_monitor_refuses_before_opening_the_database(tmp_path):
    journal = str(tmp_path / "journal.sqlite")
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    conf.set_override("journal_path", journal, group="introspectiveinstancemonitor")
    conf.set_override("notifier", "log", group="introspectiveinstancemonitor")
    conf.set_override("connection_uri", "test:///default", group="libvirt")
    other = JournalLock(journal)
    other.acquire()
    try:
        with pytest.raises(JournalLocked):
            build_monitor(conf)
        assert not os.path.exists(journal)       # not opened, so not created
    finally:
        other.release()
    monitor = build_monitor(conf)                # free now: builds, and holds it
    try:
        with pytest.raises(JournalLocked):
            JournalLock(journal).acquire()
    finally:
        monitor.stop()
    final = JournalLock(journal)
    final.acquire()
    final.release()
