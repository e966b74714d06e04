"""Read what the monitor needs from a domain's XML, and nothing else.

Pure functions: the connection layer fetches the XML, this module only
parses it, so every shape of XML Nova or an operator may produce is a
plain unit test.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

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


def parse_domain_xml(xml: str) -> tuple[bool, NovaMetadata | None]:
    """Return (has_agent, nova metadata or None) for one domain's XML.

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
    return _has_agent(root), _nova_metadata(root)


def _has_agent(root: ElementTree.Element) -> bool:
    """Any virtio channel named for qemu-ga counts, whatever its source
    (unix socket, pty) or position among the devices."""
    for channel in root.iter("channel"):
        for target in channel.findall("target"):
            if (target.get("type") == "virtio"
                    and target.get("name") == AGENT_CHANNEL_NAME):
                return True
    return False


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
