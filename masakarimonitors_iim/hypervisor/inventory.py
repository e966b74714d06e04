"""Read what the monitor needs from a domain's XML, and nothing else.

Pure functions: the connection layer fetches the XML, this module only
parses it, so every shape of XML Nova or an operator may produce is a
plain unit test.
"""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from typing import Callable

from masakarimonitors_iim.hypervisor.types import NovaMetadata

#: Domain XML larger than this is refused. Real domains are a few tens of
#: KiB even with hundreds of devices; anything near this is not a domain
#: we can reason about, and parsing it would cost every inventory pass.
MAX_XML_BYTES = 1 << 20

AGENT_CHANNEL_NAME = "org.qemu.guest_agent.0"

#: Nova has written its metadata under 1.0, 1.1 and 1.2 of this namespace,
#: adding elements each time and keeping the old ones; a later version is
#: read the same way and simply yields whatever fields it still shares.
NOVA_NS_PREFIX = "http://openstack.org/xmlns/libvirt/nova/"

#: Disk and interface targets kept per domain, each. Sampling a domain's
#: counters costs one libvirt call per target, one after another on a
#: worker (a disk's also queries QEMU), and a 1 MiB XML could list
#: thousands: 64 bounds a sample to about 130 calls and is more than
#: real guests carry. The first ones in the XML are kept, the same ones
#: every time, so two samples still compare.
MAX_DEVICES = 64
#: Longer target names are not libvirt's (an interface name is at most
#: 15 bytes, a disk target a few); skipped rather than sent back to it.
MAX_TARGET_CHARS = 64


@dataclasses.dataclass(frozen=True)
class DomainFacts:
    """What the monitor reads from one domain's XML.

    ``disks`` and ``interfaces`` are target names (``vda``, ``tap1a2b``)
    for the per-device counter calls, which take them, not indexes.
    """

    has_agent: bool
    nova: NovaMetadata | None = None
    disks: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()


def parse_domain_xml(xml: str) -> DomainFacts:
    """Read the facts the monitor needs from one domain's XML.

    Raises ValueError with a one-line message for oversized, malformed or
    non-domain XML; the caller logs it once and leaves the domain
    unmonitored rather than guessing.
    """
    size = len(xml.encode("utf-8", "replace"))
    if size > MAX_XML_BYTES:
        raise ValueError("domain XML is %d bytes, over the %d-byte limit"
                         % (size, MAX_XML_BYTES))
    # libvirt never emits a DTD; refusing one rules out entity expansion.
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise ValueError("domain XML carries a DTD, which libvirt never writes")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise ValueError("domain XML is malformed: %s" % exc) from None
    if root.tag != "domain":
        raise ValueError("root element is <%s>, not <domain>" % root.tag)
    return DomainFacts(_has_agent(root), _nova_metadata(root),
                       disks=_targets(root, "disk", _counted_disk),
                       interfaces=_targets(root, "interface", lambda _: True))


def _has_agent(root: ElementTree.Element) -> bool:
    """Any virtio channel named for qemu-ga counts, whatever its source
    (unix socket, pty) or position among the devices."""
    for channel in root.iter("channel"):
        for target in channel.findall("target"):
            if (target.get("type") == "virtio"
                    and target.get("name") == AGENT_CHANNEL_NAME):
                return True
    return False


def _counted_disk(disk: ElementTree.Element) -> bool:
    """A disk the guest does I/O on: device='disk' (the default) with
    storage behind it. CD-ROMs and floppies are left out (a config drive
    is read once at boot), and so is any disk without a source, which
    libvirt has no counters for."""
    return disk.get("device", "disk") == "disk" and disk.find("source") is not None


def _targets(root: ElementTree.Element, tag: str,
             counted: Callable[[ElementTree.Element], bool]) -> tuple[str, ...]:
    """Target names of the domain's ``tag`` devices, in XML order, at
    most MAX_DEVICES. An interface without a target (host device
    passthrough, user networking) has no counters libvirt can read."""
    devices = root.find("devices")
    found: list[str] = []
    for device in devices.findall(tag) if devices is not None else ():
        target = device.find("target")
        name = (target.get("dev") or "").strip() if target is not None else ""
        if (name and len(name) <= MAX_TARGET_CHARS and name not in found
                and counted(device)):
            found.append(name)
            if len(found) == MAX_DEVICES:
                break
    return tuple(found)


def _nova_metadata(root: ElementTree.Element) -> NovaMetadata | None:
    metadata = root.find("metadata")
    if metadata is None:
        return None
    for child in metadata:
        # ElementTree spells a namespaced tag "{namespace-uri}local".
        if not child.tag.startswith("{" + NOVA_NS_PREFIX):
            continue
        ns, _, local = child.tag[1:].partition("}")
        if local == "instance":
            return _parse_nova_instance(child, "{%s}" % ns)
    return None


def _parse_nova_instance(inst: ElementTree.Element, ns: str) -> NovaMetadata:
    def find(parent: ElementTree.Element | None, path: str) -> ElementTree.Element | None:
        if parent is None:
            return None
        return parent.find("/".join(ns + part for part in path.split("/")))

    def text(elem: ElementTree.Element | None) -> str:
        return (elem.text or "").strip() if elem is not None else ""

    def attr(elem: ElementTree.Element | None, name: str) -> str:
        return (elem.get(name) or "").strip() if elem is not None else ""

    def named_values(parent: ElementTree.Element | None, tag: str) -> dict[str, str]:
        if parent is None:
            return {}
        return {item.get("name", ""): text(item)
                for item in parent.findall(ns + tag) if item.get("name")}

    flavor = find(inst, "flavor")
    owner = find(inst, "owner")
    user = find(owner, "user")
    project = find(owner, "project")
    root_disk = find(inst, "root")
    image = find(inst, "image")

    # The root element names the boot image; a volume-backed instance has
    # type='volume' there, and newer Nova also writes <nova:image uuid=>.
    image_uuid = attr(root_disk, "uuid") if attr(root_disk, "type") == "image" else ""
    if not image_uuid:
        image_uuid = attr(image, "uuid")

    return NovaMetadata(
        instance_name=text(find(inst, "name")),
        flavor_name=attr(flavor, "name"),
        image_uuid=image_uuid,
        project_uuid=attr(project, "uuid"),
        project_name=text(project),
        user_uuid=attr(user, "uuid"),
        user_name=text(user),
        flavor_extra_specs=named_values(find(flavor, "extraSpecs"), "extraSpec"),
        image_properties=named_values(find(image, "properties"), "property"),
    )
