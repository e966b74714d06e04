"""masakari-monitors can run this monitor through its manager option.

masakari-monitors builds the manager named in
``[DEFAULT] introspectiveinstancemonitor_manager`` with
``importutils.import_object(name, host=...)`` and drives it with
init_host(), main() and stop(); reset() on SIGHUP. This does the same,
against a real libvirt connection (the test driver).

Two callers, two ways main() is called:

* ``masakari-iim`` runs main() in a thread of its own: main() blocks
  until stop();
* masakari-monitors' ``ServiceLauncher`` (oslo.service, eventlet backend,
  no monkey-patching) runs it on the main thread, and its signal handler
  only schedules the stop for later, on that same thread: main() must
  return when a signal arrives, or the stop never runs. The second test
  plays that launcher without eventlet (a handler that only records the
  signal, and the stop done after main() returns), in its own process so
  real signals can be sent. tests/e2e/test_dropin_e2e.py runs the real
  masakari-monitors binary.
"""
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

from oslo_config import cfg
from oslo_utils import importutils

from masakarimonitors_iim import conf as iim_conf

CLASS = "masakarimonitors_iim.manager.IntrospectiveInstanceMonitorManager"


def make_conf(tmp_path):
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    conf.set_override("connection_uri", "test:///default", group="libvirt")
    conf.set_override("journal_path", str(tmp_path / "journal.sqlite"),
                      group="introspectiveinstancemonitor")
    conf.set_override("notifier", "log", group="introspectiveinstancemonitor")
    return conf


def wait_status(tmp_path):
    status = tmp_path / "iim-status.json"
    deadline = time.monotonic() + 20
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status.exists(), "the monitor never listed the domains"
    return status


def test_manager_lifecycle_as_masakari_monitors_drives_it(tmp_path):
    manager = importutils.import_object(CLASS, host="compute-1", conf=make_conf(tmp_path))
    manager.init_host()
    runner = threading.Thread(target=manager.main, daemon=True)
    runner.start()
    assert "no guest agent channel" in wait_status(tmp_path).read_text()
    manager.reset()
    time.sleep(0.5)
    assert runner.is_alive(), "main() off the main thread must block until stop()"
    started = time.monotonic()
    manager.stop()
    runner.join(5)
    assert not runner.is_alive()
    assert time.monotonic() - started < 5


def test_manager_restarts_after_stop_as_oslo_service_does_on_sighup(tmp_path):
    """oslo.service's restart: stop(), reset(), then init_host() and main()
    again on the same manager; the new monitor runs on the same journal."""
    manager = importutils.import_object(CLASS, host="compute-1", conf=make_conf(tmp_path))
    for round_ in range(2):
        manager.init_host()
        runner = threading.Thread(target=manager.main, daemon=True)
        runner.start()
        status = wait_status(tmp_path)
        assert runner.is_alive(), round_
        manager.stop()
        runner.join(5)
        assert not runner.is_alive(), round_
        manager.reset()          # after stop(): nothing to reload, no error
        status.unlink()


# Plays oslo.service's ServiceLauncher: its handler only records the signal;
# the stop (or, for SIGHUP, the restart) runs after main() has returned.
LAUNCHER = textwrap.dedent("""\
    import signal, sys
    from oslo_config import cfg
    from masakarimonitors_iim import conf as iim_conf
    from masakarimonitors_iim.manager import IntrospectiveInstanceMonitorManager

    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf([], project="masakarimonitors", default_config_files=[])
    conf.set_override("connection_uri", "test:///default", group="libvirt")
    conf.set_override("journal_path", sys.argv[1], group="introspectiveinstancemonitor")
    conf.set_override("notifier", "log", group="introspectiveinstancemonitor")

    pending = []
    for signo in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signo, lambda signo, frame: pending.append(signo))
    manager = IntrospectiveInstanceMonitorManager(host="compute-1", conf=conf)
    while True:
        manager.init_host()
        print("waiting", flush=True)
        manager.main()                      # on the main thread
        signo = pending.pop(0)
        print("main returned on signal", signo, flush=True)
        manager.stop()
        if signo != signal.SIGHUP:
            break
        manager.reset()
    print("stopped", flush=True)
""")


def test_main_on_the_main_thread_gives_it_back_when_a_signal_arrives(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path / "journal.sqlite")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    seen = []
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout],
                     daemon=True).start()

    def expect(text, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError("%r not within %.0fs; output: %s" % (text, timeout, seen))
            if seen[-1] == text:
                return

    try:
        expect("waiting")
        time.sleep(0.5)                      # main() started the monitor and waits
        proc.send_signal(signal.SIGHUP)
        expect("main returned on signal %d" % signal.SIGHUP)
        expect("waiting")                    # restarted
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        expect("main returned on signal %d" % signal.SIGTERM, timeout=5)
        expect("stopped", timeout=5)
        assert proc.wait(5) == 0, seen
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
