"""Domain XML -> DomainFacts (agent, Nova metadata, disk and interface
targets), with real-looking XML."""
from __future__ import annotations

import pytest

from masakarimonitors_iim.hypervisor.inventory import (
    MAX_DEVICES,
    MAX_XML_BYTES,
    DomainFacts,
    parse_domain_xml,
)
from masakarimonitors_iim.hypervisor.types import NovaMetadata

# The testbed recipe's gen-domain.sh output, as defined (no source path:
# libvirt picks the socket itself).
GEN_DOMAIN = """<domain type='qemu'>
  <name>g1</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/lab/guest/vmlinuz</kernel>
    <initrd>/lab/guest/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 </cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial' index='0'/>
    <serial type='file'><source path='/lab/console-g1.log'/><target port='0'/></serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
"""

# The same domain as the running libvirt reports it (live XML): source
# path filled in, channel state and addresses added.
LIVE_CHANNEL = """<domain type='qemu' id='7'>
  <name>g1</name>
  <uuid>0a093d6c-121a-405d-865b-56ed36a8b3b9</uuid>
  <devices>
    <channel type='spicevmc'>
      <target type='virtio' name='com.redhat.spice.0' state='disconnected'/>
      <alias name='channel0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <channel type='unix'>
      <source mode='bind'
              path='/var/lib/libvirt/qemu/channel/target/domain-7-g1/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel1'/>
      <address type='virtio-serial' controller='0' bus='0' port='2'/>
    </channel>
  </devices>
</domain>
"""

PTY_CHANNEL = """<domain type='kvm'><name>p</name><devices>
  <channel type='pty'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
</devices></domain>"""

NOVA_1_0 = """<domain type='kvm' id='6'>
  <name>instance-00000004</name>
  <uuid>a173eb64-f8e6-419b-a2b7-2d3283ecb26c</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.0">
      <nova:package version="2014.2"/>
      <nova:name>demo</nova:name>
      <nova:creationTime>2014-06-27 11:22:25</nova:creationTime>
      <nova:flavor name="m1.small">
        <nova:memory>2048</nova:memory>
        <nova:disk>20</nova:disk>
        <nova:swap>0</nova:swap>
        <nova:vcpus>1</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="18509018d00743c89518135e476003e0">admin</nova:user>
        <nova:project uuid="38bd8e984a3e435a87e950a441ee55aa">admin-project</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="f0f0d38c-0a5f-4c54-83e5-d48006b888a7"/>
    </nova:instance>
  </metadata>
  <devices>
    <channel type='unix'>
      <source mode='bind'
              path='/var/lib/libvirt/qemu/org.qemu.guest_agent.0.instance-00000004.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>"""

NOVA_MODERN = """<domain type='kvm' id='9'>
  <name>instance-0000000e</name>
  <uuid>e87f30c5-911b-46a7-8aaa-01c43325c5b2</uuid>
  <metadata>
    <app:other xmlns:app="http://example.org/app/1.0"><app:name>not nova</app:name></app:other>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/{version}">
      <nova:package version="31.0.0"/>
      <nova:name>web-01</nova:name>
      <nova:creationTime>2025-03-01 08:43:41</nova:creationTime>
      <nova:flavor name="m1.medium" id="3">
        <nova:memory>4096</nova:memory>
        <nova:disk>40</nova:disk>
        <nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral>
        <nova:vcpus>2</nova:vcpus>
        <nova:extraSpecs>
          <nova:extraSpec name="hw_rng:allowed">True</nova:extraSpec>
          <nova:extraSpec name="masakari:monitor">ping,app</nova:extraSpec>
        </nova:extraSpecs>
      </nova:flavor>
      <nova:image uuid="7899d69a-dcb4-4634-b8f1-c25df4813035">
        <nova:containerFormat>bare</nova:containerFormat>
        <nova:diskFormat>qcow2</nova:diskFormat>
        <nova:minDisk>40</nova:minDisk>
        <nova:minRam>0</nova:minRam>
        <nova:properties>
          <nova:property name="hw_qemu_guest_agent">yes</nova:property>
          <nova:property name="hw_machine_type">q35</nova:property>
        </nova:properties>
      </nova:image>
      <nova:owner>
        <nova:user uuid="702a1c7f8fe34e4bb1b1ce1cbfd7d7a4">alice</nova:user>
        <nova:project uuid="4a9d1e9c2a5b4c33a0b1a7d7e2b9f001">shop</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="7899d69a-dcb4-4634-b8f1-c25df4813035"/>
      <nova:ports>
        <nova:port uuid="5d1c3f3e-2a8d-4c1e-9f0e-3f0f0f0f0f0f">
          <nova:ip type="fixed" address="10.0.0.5" ipVersion="4"/>
        </nova:port>
      </nova:ports>
    </nova:instance>
  </metadata>
  <devices>
    <channel type='unix'>
      <source mode='bind'
        path='/var/lib/libvirt/qemu/channel/target/domain-9-instance-0e/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
    </channel>
  </devices>
</domain>"""

VOLUME_BACKED = """<domain type='kvm'>
  <name>instance-00000010</name>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>db-01</nova:name>
      <nova:flavor name="m1.large"/>
      <nova:owner>
        <nova:user uuid="u1">bob</nova:user>
        <nova:project uuid="p1">infra</nova:project>
      </nova:owner>
      <nova:root type="volume" uuid="9c1a2b3c-0000-4000-8000-000000000001"/>
    </nova:instance>
  </metadata>
</domain>"""

MODERN_EXPECTED = NovaMetadata(
    instance_name="web-01",
    flavor_name="m1.medium",
    image_uuid="7899d69a-dcb4-4634-b8f1-c25df4813035",
    project_uuid="4a9d1e9c2a5b4c33a0b1a7d7e2b9f001",
    project_name="shop",
    user_uuid="702a1c7f8fe34e4bb1b1ce1cbfd7d7a4",
    user_name="alice",
    flavor_extra_specs={"hw_rng:allowed": "True", "masakari:monitor": "ping,app"},
    image_properties={"hw_qemu_guest_agent": "yes", "hw_machine_type": "q35"},
)


@pytest.mark.parametrize("xml,has_agent", [
    (GEN_DOMAIN, True),
    (LIVE_CHANNEL, True),
    (PTY_CHANNEL, True),
    (NOVA_1_0, True),
    (VOLUME_BACKED, False),
    ("<domain type='test'><name>t</name></domain>", False),
    ("<domain><devices/></domain>", False),
    # spice agent only
    ("<domain><devices><channel type='spicevmc'><target type='virtio' "
     "name='com.redhat.spice.0'/></channel></devices></domain>", False),
    # right name, wrong target type
    ("<domain><devices><channel type='unix'><target type='guestfwd' "
     "name='org.qemu.guest_agent.0'/></channel></devices></domain>", False),
    # a second agent channel name is not qemu-ga's
    ("<domain><devices><channel type='unix'><target type='virtio' "
     "name='org.qemu.guest_agent.1'/></channel></devices></domain>", False),
    # the name on a serial port, not a channel
    ("<domain><devices><serial type='pty'><target type='virtio' "
     "name='org.qemu.guest_agent.0'/></serial></devices></domain>", False),
])
def test_has_agent(xml, has_agent):
    assert parse_domain_xml(xml).has_agent is has_agent


def test_plain_domain_has_no_nova_metadata():
    assert parse_domain_xml(GEN_DOMAIN) == DomainFacts(True, None)


def test_nova_1_0():
    facts = parse_domain_xml(NOVA_1_0)
    assert facts.has_agent
    assert facts.nova == NovaMetadata(
        instance_name="demo",
        flavor_name="m1.small",
        image_uuid="f0f0d38c-0a5f-4c54-83e5-d48006b888a7",
        project_uuid="38bd8e984a3e435a87e950a441ee55aa",
        project_name="admin-project",
        user_uuid="18509018d00743c89518135e476003e0",
        user_name="admin",
    )


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nova_with_extra_specs_and_image_properties(version):
    facts = parse_domain_xml(NOVA_MODERN.replace("{version}", version))
    assert facts.has_agent
    assert facts.nova == MODERN_EXPECTED


def test_volume_backed_instance_has_no_image():
    nova = parse_domain_xml(VOLUME_BACKED).nova
    assert nova.image_uuid == ""
    assert (nova.instance_name, nova.flavor_name, nova.user_name, nova.project_name) == (
        "db-01", "m1.large", "bob", "infra")
    assert nova.flavor_extra_specs == {} and nova.image_properties == {}


def test_volume_backed_instance_with_image_element_uses_it():
    xml = VOLUME_BACKED.replace(
        "</nova:instance>", "<nova:image uuid='img-1'/></nova:instance>")
    assert parse_domain_xml(xml).nova.image_uuid == "img-1"


def test_other_applications_metadata_is_not_nova():
    xml = ("<domain><metadata><app:i xmlns:app='http://example.org/x'>"
           "<app:name>x</app:name></app:i>"
           "<nova:instance xmlns:nova='http://openstack.org/xmlns/other/1.0'/>"
           "</metadata></domain>")
    assert parse_domain_xml(xml) == DomainFacts(False, None)


def test_non_ascii_instance_name_survives():
    xml = NOVA_MODERN.replace("{version}", "1.1").replace("web-01", "侯超-ü")
    assert parse_domain_xml(xml).nova.instance_name == "侯超-ü"


def test_empty_nova_instance_gives_empty_fields():
    xml = ("<domain><metadata><nova:instance "
           "xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/></metadata></domain>")
    assert parse_domain_xml(xml) == DomainFacts(False, NovaMetadata())


def test_extra_spec_without_name_is_skipped():
    xml = NOVA_MODERN.replace("{version}", "1.1").replace(
        '<nova:extraSpec name="hw_rng:allowed">', "<nova:extraSpec>")
    assert parse_domain_xml(xml).nova.flavor_extra_specs == {"masakari:monitor": "ping,app"}


@pytest.mark.parametrize("xml,fragment", [
    ("", "malformed"),
    ("not xml at all", "malformed"),
    ("<domain><name>x</name>", "malformed"),
    (GEN_DOMAIN[: len(GEN_DOMAIN) // 2], "malformed"),
    ("<domain><devices></domain>", "malformed"),
    ("<network><name>default</name></network>", "not <domain>"),
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
     '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><domain><name>&lol2;</name></domain>', "DTD"),
    ("<domain><description>" + "x" * MAX_XML_BYTES + "</description></domain>", "limit"),
])
def test_bad_xml_raises_one_line_value_error(xml, fragment):
    with pytest.raises(ValueError) as info:
        parse_domain_xml(xml)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_size_limit_counts_bytes_not_characters():
    # 3-byte characters: under the limit in characters, over it in bytes.
    body = "侯" * (MAX_XML_BYTES // 3 + 10)
    with pytest.raises(ValueError, match="limit"):
        parse_domain_xml("<domain><description>%s</description></domain>" % body)


def test_just_under_the_limit_is_parsed():
    head, tail = "<domain><description>", "</description></domain>"
    xml = head + "x" * (MAX_XML_BYTES - len(head) - len(tail)) + tail
    assert parse_domain_xml(xml) == DomainFacts(False, None)


# -- disk and interface targets (what domain_activity reads counters for) ---------

# Devices as libvirt 9.0 reports a running Nova guest (live XML): image
# disk, Cinder volumes (block, rbd), config drive, an empty CD-ROM, a
# tap and an SR-IOV interface.
NOVA_DEVICES = """<domain type='kvm' id='9'>
  <name>instance-00000009</name>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:flavor name="m1.small"><nova:disk>20</nova:disk></nova:flavor>
    </nova:instance>
  </metadata>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/nova/instances/9/disk' index='4'/>
      <backingStore type='file' index='5'><format type='raw'/>
        <source file='/var/lib/nova/instances/_base/abc'/></backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/disk/by-id/wwn-0x60a98000' index='3'/>
      <target dev='vdb' bus='virtio'/><serial>8f5e0b1c</serial>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='volumes/volume-1' index='2'>
        <host name='10.0.0.1' port='6789'/></source>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/var/lib/nova/instances/9/disk.config' index='1'/>
      <target dev='hda' bus='ide'/><readonly/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdb' bus='ide'/><readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='fa:16:3e:11:22:33'/>
      <source bridge='qbr1a2b3c4d-5e'/>
      <target dev='tap1a2b3c4d-5e'/>
      <model type='virtio'/><alias name='net0'/>
    </interface>
    <interface type='hostdev' managed='yes'>
      <mac address='fa:16:3e:44:55:66'/>
      <source><address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/>
      </source>
      <alias name='hostdev0'/>
    </interface>
  </devices>
</domain>
"""


def test_nova_guest_devices():
    facts = parse_domain_xml(NOVA_DEVICES)
    # Config drive and empty CD-ROM left out; SR-IOV has no target.
    assert facts.disks == ("vda", "vdb", "vdc")
    assert facts.interfaces == ("tap1a2b3c4d-5e",)


def _devices(body: str) -> str:
    return "<domain><devices>%s</devices></domain>" % body


def _disk(dev: str, attrs: str = "", source: bool = True) -> str:
    return "<disk type='file' %s>%s<target dev='%s'/></disk>" % (
        attrs, "<source file='/img'/>" if source else "", dev)


@pytest.mark.parametrize("body,disks,interfaces", [
    ("", (), ()),
    (_disk("vda"), ("vda",), ()),                            # device= defaults to disk
    (_disk("vda", "device='disk'", source=False), (), ()),   # no storage behind it
    (_disk("fda", "device='floppy'"), (), ()),
    (_disk("sda", "device='lun'"), (), ()),
    (_disk("vda") + _disk("vda"), ("vda",), ()),             # asked once
    (_disk(" vda "), ("vda",), ()),
    ("<disk type='file'><source file='/img'/><target/></disk>", (), ()),
    ("<disk type='file'><source file='/img'/></disk>", (), ()),
    (_disk("v" * 65), (), ()),                               # not a libvirt name
    ("<interface type='user'/>", (), ()),
    ("<interface type='network'><target dev=''/></interface>", (), ()),
    ("<interface type='ethernet'><target dev='tap0' managed='no'/></interface>"
     "<interface type='bridge'><target dev='vnet3'/></interface>", (), ("tap0", "vnet3")),
    # only <devices> children: a <disk> elsewhere is not a device
    ("<hub><disk><source file='/img'/><target dev='vdz'/></disk></hub>", (), ()),
])
def test_device_targets(body, disks, interfaces):
    facts = parse_domain_xml(_devices(body))
    assert (facts.disks, facts.interfaces) == (disks, interfaces)


def test_device_targets_are_bounded_and_keep_xml_order():
    body = "".join(_disk("vd%d" % i) for i in range(MAX_DEVICES + 50)) + "".join(
        "<interface type='bridge'><target dev='tap%d'/></interface>" % i
        for i in range(MAX_DEVICES * 10))
    facts = parse_domain_xml(_devices(body))
    assert facts.disks == tuple("vd%d" % i for i in range(MAX_DEVICES))
    assert facts.interfaces == tuple("tap%d" % i for i in range(MAX_DEVICES))


def test_devices_outside_devices_element_are_not_counted():
    # Nova's own <nova:disk> (flavor size) must not look like a disk.
    assert parse_domain_xml(NOVA_1_0).disks == ()
