"""Inventory cost against libvirt's test driver, at N = 100 .. 2000 domains.

Drives the real ``Hypervisor.list_running_domains`` (hypervisor/listing.py)
against ``test:///<node.xml>`` holding N running domains with the XML Nova
writes (nova:instance metadata 1.1, two disks, two interfaces, the qemu-ga
channel, graphics, serial, RNG), and prints per N:

* the first listing (every domain new: XML fetched and parsed),
* steady state: libvirt calls per domain per interval and inventory CPU per
  interval, with no change and with 1 % of domains changed per interval
  (a metadata change event, as Nova's setMetadata sends),
* one interval with a guest-ping to every domain: all libvirt calls per
  domain, the agent command included (it is answered by a stand-in, as the
  test driver has no agents; lookups are counted as before),
* the same for the previous inventory (listAllDomains, then state() and
  XMLDesc() and a parse for every domain, every interval), side by side.

libvirt calls are counted by wrapping every virConnect / virDomain method
that is an RPC on a remote connection (name, UUID and ID are local). The
test driver answers in-process, so times are the client's CPU, not
libvirtd's; the call counts are what a real libvirtd would serve.

    .venv/bin/python benchmarks/inventory.py [--sizes 100,500,1000,2000] [--intervals 10]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
import uuid as uuidlib
from typing import Any, Callable

import libvirt
import libvirt_qemu

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from masakarimonitors_iim.hypervisor.calls import Hypervisor  # noqa: E402
from masakarimonitors_iim.hypervisor.inventory import parse_domain_xml  # noqa: E402

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
LOCAL = {"UUIDString", "UUID", "name", "ID", "connect", "getURI", "isAlive"}


def nova_domain_xml(i: int) -> str:
    uuid = str(uuidlib.UUID(int=i + 1))
    name = "instance-%08x" % (i + 1)
    mac = "fa:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    return f"""<domain type='test'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <nova:instance xmlns:nova="{NOVA_NS}">
      <nova:package version="27.1.0"/>
      <nova:name>web-{i:05d}</nova:name>
      <nova:creationTime>2026-11-29 10:00:00</nova:creationTime>
      <nova:flavor name="m1.small">
        <nova:memory>2048</nova:memory><nova:disk>20</nova:disk><nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral><nova:vcpus>1</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="8b2d4c1e5f6a4b7c8d9e0f1a2b3c4d5e">alice</nova:user>
        <nova:project uuid="1a2b3c4d5e6f4a7b8c9d0e1f2a3b4c5d">shop</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"/>
      <nova:ports>
        <nova:port uuid="{uuidlib.UUID(int=10**6 + i)}">
          <nova:ip type="fixed" address="10.0.{(i >> 8) & 255}.{i & 255}" ipVersion="4"/>
        </nova:port>
      </nova:ports>
    </nova:instance>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <cputune><shares>1024</shares></cputune>
  <sysinfo type='smbios'>
    <system>
      <entry name='manufacturer'>OpenStack Foundation</entry>
      <entry name='product'>OpenStack Nova</entry>
      <entry name='version'>27.1.0</entry>
      <entry name='serial'>{uuid}</entry>
      <entry name='uuid'>{uuid}</entry>
      <entry name='family'>Virtual Machine</entry>
    </system>
  </sysinfo>
  <os><type arch='x86_64' machine='pc-i440fx-6.2'>hvm</type><boot dev='hd'/>
    <smbios mode='sysinfo'/></os>
  <features><acpi/><apic/></features>
  <clock offset='utc'><timer name='pit' tickpolicy='delay'/>
    <timer name='rtc' tickpolicy='catchup'/><timer name='hpet' present='no'/></clock>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/nova/instances/{uuid}/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='/var/lib/nova/instances/{uuid}/disk.config'/>
      <target dev='hda' bus='ide'/><readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='qbr{uuid[:11]}'/>
      <target dev='tap{uuid[:11]}'/>
      <model type='virtio'/><mtu size='1450'/>
    </interface>
    <interface type='bridge'>
      <mac address='fa:16:3f:{mac[9:]}'/>
      <source bridge='br-int'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><log file='/var/lib/nova/instances/{uuid}/console.log' append='off'/>
      <target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/{name}.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <input type='tablet' bus='usb'/>
    <graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'/>
    <video><model type='cirrus'/></video>
    <memballoon model='virtio'><stats period='10'/></memballoon>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
"""


def write_node(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.write("<node>\n")
        for i in range(n):
            f.write(nova_domain_xml(i))
        f.write("</node>\n")


class CallCounter:
    """Counts RPC-making methods of virConnect and virDomain while on."""

    def __init__(self) -> None:
        self.on = False
        self.count = 0
        self.by_name: dict[str, int] = {}
        for cls in (libvirt.virConnect, libvirt.virDomain):
            for name, member in list(vars(cls).items()):
                if callable(member) and not name.startswith("_") and name not in LOCAL:
                    setattr(cls, name, self._wrap(name, member))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                self.count += 1
                self.by_name[name] = self.by_name.get(name, 0) + 1
            return real(*args, **kwargs)
        return counted

    def measure(self, func: Callable[[], Any]) -> tuple[int, float, float]:
        """(calls, wall seconds, CPU seconds of this thread) of one call."""
        self.count = 0
        self.on = True
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            func()
        finally:
            self.on = False
        return self.count, time.perf_counter() - wall, time.thread_time() - cpu


def previous_inventory(conn: libvirt.virConnect) -> None:
    """What list_running_domains did before: per domain state + XML + parse."""
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        dom.state()
        parse_domain_xml(dom.XMLDesc(0))


def change_some(hv: Hypervisor, n_changed: int, offset: int) -> None:
    """Nova-like metadata updates on ``n_changed`` domains (events follow)."""
    with hv._connection.hold() as conn:
        doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        for k in range(n_changed):
            dom = doms[(offset + k * 97) % len(doms)]
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                            "<instance><name>renamed-%d</name></instance>" % offset,
                            "nova", NOVA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def run(n: int, intervals: int, counter: CallCounter, workdir: str) -> dict[str, float]:
    path = os.path.join(workdir, "node-%d.xml" % n)
    write_node(path, n)
    hv = Hypervisor("test://" + path)
    hv.start()
    try:
        if not hv.wait_connected(30):
            raise SystemExit("cannot open test://%s" % path)
        calls, wall, cpu = counter.measure(hv.list_running_domains)
        listed = len(hv.list_running_domains())
        assert listed == n, (listed, n)
        row: dict[str, float] = {"n": n, "first_s": wall, "first_calls": calls / n}
        steady = [counter.measure(hv.list_running_domains) for _ in range(intervals)]
        row["calls"] = sum(c for c, _, _ in steady) / intervals / n
        row["cpu_ms"] = 1000 * sum(c for _, _, c in steady) / intervals
        churn = []
        for k in range(intervals):
            change_some(hv, max(1, n // 100), k)
            time.sleep(0.05)   # let the events reach the event thread
            churn.append(counter.measure(hv.list_running_domains))
        row["churn_calls"] = sum(c for c, _, _ in churn) / intervals / n
        row["churn_cpu_ms"] = 1000 * sum(c for _, _, c in churn) / intervals
        pings = 0

        def ping_reply(dom: Any, payload: str, timeout: int, flags: int) -> str:
            nonlocal pings
            pings += 1
            return '{"return": {}}'

        real_agent = libvirt_qemu.qemuAgentCommand
        libvirt_qemu.qemuAgentCommand = ping_reply
        try:
            uuids = [d.uuid for d in hv.list_running_domains()]

            def interval() -> None:
                hv.list_running_domains()
                for uuid in uuids:
                    hv.agent_command(uuid, "guest-ping")

            calls, _, _ = counter.measure(interval)
        finally:
            libvirt_qemu.qemuAgentCommand = real_agent
        row["probe_calls"] = (calls + pings) / n
        with hv._connection.hold() as conn:
            old = [counter.measure(lambda: previous_inventory(conn)) for _ in range(3)]
        row["old_calls"] = sum(c for c, _, _ in old) / 3 / n
        row["old_cpu_ms"] = 1000 * sum(c for _, _, c in old) / 3
        return row
    finally:
        hv.stop()


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "?")
    except OSError:
        pass
    return "%s\nCPU: %s, %d cores; Python %s; libvirt %s" % (
        " ".join(platform.uname()), model, os.cpu_count() or 0, platform.python_version(),
        libvirt.getVersion())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000,2000")
    parser.add_argument("--intervals", type=int, default=10)
    args = parser.parse_args(argv)
    counter = CallCounter()
    print("# inventory against libvirt's test driver (benchmarks/inventory.py)")
    print(machine())
    print()
    print("| N | first listing | calls/domain/interval, steady | with 1 % changed "
          "| inventory CPU/interval, steady | with 1 % changed | with a ping each: calls/domain "
          "| before: calls | before: CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="iim-inventory-") as workdir:
        for n in (int(x) for x in args.sizes.split(",")):
            r = run(n, args.intervals, counter, workdir)
            print("| %d | %.0f ms | %.3f | %.3f | %.1f ms | %.1f ms | %.3f | %.2f | %.1f ms |" % (
                n, 1000 * r["first_s"], r["calls"], r["churn_calls"], r["cpu_ms"],
                r["churn_cpu_ms"], r["probe_calls"], r["old_calls"], r["old_cpu_ms"]),
                flush=True)
    print()
    print("RSS after the run: %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                          / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
