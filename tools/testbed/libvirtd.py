"""A private libvirtd: its own config, sockets and state, invisible to the host.

The QEMU driver insists on the fixed paths /etc/libvirt, /run/libvirt,
/var/lib/libvirt, ... and on resolving the user ``libvirt-qemu`` (created by
libvirt-daemon-system, which we do not install because it brings systemd
units along). So libvirtd runs in a private mount namespace in which those
paths, plus /etc/passwd and /etc/group, are bind mounts of directories under
the testbed's work directory. The host's mount table never changes: the
mounts vanish with the last process of the namespace.

QEMU processes started by this libvirtd inherit the namespace and outlive a
libvirtd restart; the restarted daemon sees the same bind mounts and
reconnects to them, as a real compute node's libvirtd does after an upgrade.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from pathlib import Path

from .procs import Daemon, TestbedError, run, wait_for

LIBVIRTD = "/usr/sbin/libvirtd"

_QEMU_CONF = """\
# Run QEMU as root without the confinement a real host has: no SELinux or
# AppArmor labels, no cgroups, no per-domain mount namespace, and log
# through files rather than virtlogd (which we do not run).
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


class Libvirtd:
    """One libvirtd whose files all live under ``root``.

    ``capabilities_cache`` is bound over /var/cache/libvirt. Sharing it
    between runs turns the ~8 s QEMU capability probe of a cold start into
    a cache hit; libvirt revalidates it against the QEMU binary itself.
    """

    def __init__(self, root: Path, capabilities_cache: Path) -> None:
        self.root = root
        self.capabilities_cache = capabilities_cache
        self.daemon: Daemon | None = None

    @property
    def socket(self) -> Path:
        return self.root / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    def _prepare(self) -> None:
        for sub in ("etc", "run", "lib", "log", "sock"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.capabilities_cache.mkdir(parents=True, exist_ok=True)
        (self.root / "etc" / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.root / "sock"}"\n'
            'unix_sock_rw_perms = "0700"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            "log_level = 3\n"
            f'log_outputs = "3:file:{self.root / "log" / "libvirtd.log"}"\n'
        )
        (self.root / "etc" / "qemu.conf").write_text(_QEMU_CONF)
        # libvirt-qemu (and kvm, which the driver also looks up) exist only
        # inside the namespace.
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        if not any(line.startswith("libvirt-qemu:") for line in passwd.splitlines()):
            passwd += "libvirt-qemu:x:64055:64055:libvirt qemu:/nonexistent:/usr/sbin/nologin\n"
        for name, gid in (("libvirt-qemu", 64055), ("kvm", 64056)):
            if not any(line.startswith(f"{name}:") for line in group.splitlines()):
                group += f"{name}:x:{gid}:\n"
        (self.root / "passwd").write_text(passwd)
        (self.root / "group").write_text(group)

    def _bind_mounts(self) -> list[tuple[Path, str]]:
        return [
            (self.root / "etc", "/etc/libvirt"),
            (self.root / "passwd", "/etc/passwd"),
            (self.root / "group", "/etc/group"),
            (self.root / "run", "/run/libvirt"),
            (self.root / "lib", "/var/lib/libvirt"),
            (self.capabilities_cache, "/var/cache/libvirt"),
            (self.root / "log", "/var/log/libvirt"),
        ]

    def start(self) -> None:
        """Launch libvirtd in its namespace; :meth:`wait_ready` waits for it."""
        if self.daemon and self.daemon.alive():
            raise TestbedError("libvirtd already running")
        self._prepare()
        script = []
        for source, target in self._bind_mounts():
            # Mount points must exist on the host; empty dirs are harmless.
            if not Path(target).exists():
                Path(target).mkdir(parents=True)
            script.append(f"mount --bind {shlex.quote(str(source))} {target}")
        conf = self.root / "etc" / "libvirtd.conf"
        script.append(
            f"exec {LIBVIRTD} --config {shlex.quote(str(conf))}"
            f" --pid-file {shlex.quote(str(self.root / 'libvirtd.pid'))}"
        )
        # unshare and sh both exec, so the daemon's pid is the one we spawn.
        self.daemon = Daemon.spawn(
            "libvirtd",
            ["unshare", "--mount", "--propagation", "private", "sh", "-ec", "; ".join(script)],
            self.root / "log" / "libvirtd.stdout",
            marker=str(conf),
        )

    def ready(self) -> bool:
        if not self.socket.exists():
            return False
        return run(["virsh", "-c", self.uri, "version"], check=False, timeout=30).returncode == 0

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.daemon is not None
        wait_for(
            f"libvirtd (log in {self.root / 'log'})",
            self.ready,
            timeout,
            interval=0.1,
            alive=self.daemon.alive,
        )

    def stop(self) -> None:
        """Stop the daemon only; running QEMU processes are left alone."""
        if self.daemon is not None:
            self.daemon.stop(timeout=15)
        self.socket.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()

    def kill_leftover_qemu(self, marker: str) -> list[int]:
        """SIGKILL QEMU processes whose command line contains ``marker``.

        A last resort after libvirtd is gone: every guest's command line names
        its console log in the work directory, so this finds only our guests.
        """
        killed = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if "qemu-system" in cmdline.split(" ", 1)[0] and marker in cmdline:
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        while killed and time.monotonic() < deadline and any(_exists(p) for p in killed):
            time.sleep(0.05)
        return killed


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
