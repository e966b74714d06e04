"""The worked example in doc/source/policy.rst loads and shows what the
doc says it shows, so the operator documentation cannot rot."""
from __future__ import annotations

import pathlib
import re

from masakarimonitors_iim.policy import Defaults, explain, load_policy_file, resolve

DOC = pathlib.Path(__file__).parents[3] / "doc" / "source" / "policy.rst"


def _blocks(kind: str) -> list[str]:
    """The bodies of ``.. code-block:: KIND`` directives, dedented."""
    blocks = []
    lines = DOC.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: %s" % kind:
            continue
        body = []
        for follow in lines[i + 1:]:
            if follow and not follow.startswith("   "):
                break
            body.append(follow[3:])
        blocks.append("\n".join(body).strip("\n") + "\n")
    return blocks


def test_worked_example(tmp_path, make_domain, with_reset_marker):
    path = tmp_path / "iim-policy.yaml"
    path.write_text(_blocks("yaml")[0])
    policy_file = load_policy_file(str(path))

    sip = make_domain(instance_name="sip-7", flavor_name="vnf.sip.large",
                      project_name="telco",
                      image_properties={"os_distro": "ubuntu"},
                      flavor_extra_specs={"masakari_iim:failure_threshold": "4"})
    policy = resolve(Defaults(interval=30, timeout=10, failure_threshold=3), sip, policy_file)

    console = _blocks("console")[0].splitlines()
    assert console[0].startswith("$ masakari-iim policy show")
    assert explain(policy) == console[1:]

    batch = make_domain(project_name="batch-nightly")
    shown = explain(resolve(Defaults(30, 10, 3), batch, policy_file))
    assert shown[0] == "enabled: no (unmonitored by policy)  [rule 'batch-unmonitored']"
    assert re.search(r"\[rule 'batch-unmonitored'\]", DOC.read_text())
