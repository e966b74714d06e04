"""Define, boot and control the testbed's guests through the private libvirtd.

Everything goes through ``virsh`` so that the testbed needs no Python
bindings and every action can be replayed by hand with the same command.
The guests are what a Nova compute node would run: each domain carries a
``<nova:instance>`` metadata block like the one Nova's libvirt driver writes,
so that monitor code that reads it sees what it would see in production.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .guest_image import GuestImage
from .procs import TestbedError, run

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"

#: Keys accepted in ``nova_metadata`` and their defaults. ``name`` defaults to
#: the domain name; the UUIDs are fixed so that tests can match on them.
NOVA_METADATA_DEFAULTS: dict[str, str] = {
    "name": "",
    "flavor_name": "m1.tiny",
    "image_uuid": "6a1a8f4e-2d7b-4c1e-9a35-1f3c2b7d9e01",
    "project_name": "demo",
    "project_id": "9f2c5e7a1b3d4c6e8f0a2b4c6d8e0f1a",
    "user_name": "admin",
    "user_id": "3e5b7d9f1a2c4e6b8d0f2a4c6e8b0d2f",
}

GUEST_MEMORY_MIB = 128


class GuestAgentError(TestbedError):
    """The guest agent (or libvirt on its behalf) refused or failed a command."""


@dataclass(frozen=True)
class ExecResult:
    exitcode: int
    stdout: str
    stderr: str


def _nova_metadata_xml(domain_name: str, overrides: dict[str, str] | None) -> str:
    values = dict(NOVA_METADATA_DEFAULTS, name=domain_name)
    for key, value in (overrides or {}).items():
        if key not in NOVA_METADATA_DEFAULTS:
            raise ValueError(
                f"unknown nova_metadata key {key!r}; known: {sorted(NOVA_METADATA_DEFAULTS)}"
            )
        values[key] = str(value)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    v = {k: escape(s) for k, s in values.items()}
    return f"""\
    <nova:instance xmlns:nova="{NOVA_NS}">
      <nova:package version="27.1.0"/>
      <nova:name>{v["name"]}</nova:name>
      <nova:creationTime>{created}</nova:creationTime>
      <nova:flavor name={quoteattr(values["flavor_name"])}>
        <nova:memory>{GUEST_MEMORY_MIB}</nova:memory>
        <nova:disk>0</nova:disk>
        <nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral>
        <nova:vcpus>1</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid={quoteattr(values["user_id"])}>{v["user_name"]}</nova:user>
        <nova:project uuid={quoteattr(values["project_id"])}>{v["project_name"]}</nova:project>
      </nova:owner>
      <nova:root type="image" uuid={quoteattr(values["image_uuid"])}/>
      <nova:ports/>
    </nova:instance>"""


def domain_xml(
    name: str,
    domain_uuid: str,
    image: GuestImage,
    cmdline: str,
    console_log: Path,
    nova_metadata: dict[str, str] | None = None,
    data_disk: Path | None = None,
) -> str:
    """Libvirt XML for a disk-less, network-less TCG guest with a qemu-ga channel
    (``data_disk``: a raw image attached as virtio disk vda).

    The TCG translation cache is capped at 32 MiB (QEMU's default is far
    larger), which keeps each guest around 210 MiB of host memory.
    """
    return f"""\
<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{domain_uuid}</uuid>
  <metadata>
{_nova_metadata_xml(name, nova_metadata)}
  </metadata>
  <memory unit='MiB'>{GUEST_MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features>
    <acpi/>
    <tcg><tb-cache unit='MiB'>32</tb-cache></tcg>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial' index='0'/>
    <serial type='file'>
      <source path={quoteattr(str(console_log))}/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='none'/>{_disk_xml(data_disk)}
  </devices>
</domain>
"""


def _disk_xml(image: Path | None) -> str:
    if image is None:
        return ""
    return f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file={quoteattr(str(image))}/>
      <target dev='vda' bus='virtio'/>
    </disk>"""


#: Size of the optional data disk: enough for a few MiB of test I/O.
DATA_DISK_MIB = 32


class Guests:
    """Guest operations against one libvirtd (by URI)."""

    def __init__(
        self, uri: str, workdir: Path, image: GuestImage | None, qemu_run_dir: Path
    ) -> None:
        self.uri = uri
        self.workdir = workdir
        self.image = image
        self.qemu_run_dir = qemu_run_dir

    # -- plumbing ---------------------------------------------------------

    def virsh(self, *args: str, timeout: float = 30, check: bool = True) -> str:
        return run(["virsh", "-q", "-c", self.uri, *args], timeout=timeout, check=check).stdout

    def agent(
        self, name: str, command: str, arguments: dict[str, Any] | None = None, timeout: int = 5
    ) -> Any:
        """Send one qemu-ga command through libvirt; return its ``return`` value."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        proc = run(
            [
                "virsh",
                "-c",
                self.uri,
                "qemu-agent-command",
                name,
                json.dumps(request),
                "--timeout",
                str(timeout),
            ],
            timeout=timeout + 30,
            check=False,
        )
        if proc.returncode != 0:
            raise GuestAgentError(f"{command} on {name}: {proc.stderr.strip()}")
        return json.loads(proc.stdout)["return"]

    # -- lifecycle --------------------------------------------------------

    def create(
        self,
        name: str,
        agent: bool = True,
        blocked_rpcs: list[str] | tuple[str, ...] = (),
        nova_metadata: dict[str, str] | None = None,
        disk: bool = False,
    ) -> str:
        """Define a persistent domain and boot it; return its UUID.

        ``disk``: attach a fresh ext4 data disk, mounted at /data by the
        guest's init (a filesystem to fsfreeze, block I/O to count).

        Persistent (defined, not just created) so that it survives a
        ``destroy`` and can be started again, which is what Nova's stop and
        start do and what masakari's recovery relies on.
        """
        if self.image is None:
            raise TestbedError("guest image unknown; run setup() first")
        cmdline = ["console=ttyS0", "quiet", "panic=-1"]
        if not agent:
            cmdline.append("ga_off")
        if blocked_rpcs:
            cmdline.append("ga_block=" + ",".join(blocked_rpcs))
        domain_uuid = str(uuid.uuid4())
        guest_dir = self.workdir / "guests"
        guest_dir.mkdir(parents=True, exist_ok=True)
        data_disk = None
        if disk:
            cmdline.append("data_disk")
            data_disk = guest_dir / f"{name}-data.img"
            with open(data_disk, "wb") as f:
                f.truncate(DATA_DISK_MIB * 1024 * 1024)
            run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", str(data_disk)], timeout=60)
        xml_path = guest_dir / f"{name}.xml"
        xml_path.write_text(
            domain_xml(
                name,
                domain_uuid,
                self.image,
                " ".join(cmdline),
                guest_dir / f"console-{name}.log",
                nova_metadata,
                data_disk,
            )
        )
        self.virsh("define", str(xml_path))
        self.virsh("start", name, timeout=60)
        return domain_uuid

    def start(self, name: str) -> None:
        self.virsh("start", name, timeout=60)

    def state(self, name: str) -> str:
        """virsh domstate, with spaces as dashes: running, paused, shut-off, ..."""
        return self.virsh("domstate", name).strip().replace(" ", "-")

    def qemu_pid(self, name: str) -> int | None:
        """Pid of the QEMU process of a running domain (from libvirt's pid file)."""
        try:
            return int((self.qemu_run_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def pause(self, name: str) -> None:
        self.virsh("suspend", name)

    def resume(self, name: str) -> None:
        self.virsh("resume", name)

    def destroy(self, name: str) -> None:
        self.virsh("destroy", name, timeout=60)

    def remove_all(self) -> None:
        """Power off and undefine every domain of this libvirtd.

        In parallel: a single destroy takes about 2 s on this machine, not
        because QEMU is slow to die (it exits at once on SIGTERM) but because
        libvirt waits until the exited process is reaped, and its adoptive
        parent (pid 1 here) reaps only every couple of seconds.
        """

        def remove(domain: str) -> None:
            self.virsh("destroy", domain, timeout=60, check=False)
            self.virsh("undefine", domain, check=False)

        domains = self.virsh("list", "--all", "--name", check=False).split()
        with ThreadPoolExecutor(max_workers=max(1, len(domains))) as pool:
            list(pool.map(remove, domains))

    # -- agent ------------------------------------------------------------

    def wait_agent(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                self.agent(name, "guest-ping", timeout=2)
                return
            except GuestAgentError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TestbedError(f"agent of {name} did not answer within {timeout}s: {last}")

    def exec(self, name: str, argv: list[str], timeout: float = 10) -> ExecResult:
        """Run ``argv`` in the guest via guest-exec and wait for it to end.

        On timeout the command keeps running in the guest; nothing there
        would kill it, and tests of a hung health check rely on that.
        """
        started = self.agent(
            name,
            "guest-exec",
            {
                "path": argv[0],
                "arg": list(argv[1:]),
                "capture-output": True,
            },
        )
        pid = started["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.agent(name, "guest-exec-status", {"pid": pid})
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv} in {name} still running after {timeout}s")
            time.sleep(0.05)
        return ExecResult(
            exitcode=int(status.get("exitcode", -1)),
            stdout=base64.b64decode(status.get("out-data", "")).decode(errors="replace"),
            stderr=base64.b64decode(status.get("err-data", "")).decode(errors="replace"),
        )

    def freeze_agent(self, name: str) -> None:
        """SIGSTOP qemu-ga inside the guest; the VM keeps running.

        The agent has to deliver the signal to itself, so the kill runs
        detached after a short delay: the guest-exec reply must be sent
        before the agent stops. The freeze lasts until the guest restarts.

        Returns once the kill has had time to run, without pinging the
        agent to check: a timed-out agent command leaves libvirt out of
        sync with the agent, and the next caller (the monitor) would then
        wait libvirt's 5 s guest-sync first, which would distort every
        detection time measured from here. Tests check the freeze through
        what the monitor sees (FAILED, a hold, a report).
        """
        self.agent(
            name,
            "guest-exec",
            {
                "path": "/bin/sh",
                "arg": ["-c", "sleep 0.3; killall -STOP qemu-ga"],
            },
        )
        time.sleep(0.5)
