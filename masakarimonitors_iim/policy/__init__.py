"""What to probe on a domain, how often and how patiently.

Three layers, each overriding the one before, field by field:

1. the configuration defaults (:class:`Defaults`, from the config file);
2. the host policy file (YAML): every rule whose ``match`` fits the
   domain applies, in file order, so later rules override earlier ones
   (general rules first, specific ones last). ``probes`` is replaced as a
   whole list, never merged;
3. per-instance keys: ``masakari_iim:<field>`` in the flavor extra specs
   (set by the cloud admin) and, only if the policy file allows it, in
   the image properties (set by image owners, often tenants). Image
   properties apply first, flavor extra specs last, so the admin wins.
   Image-property values are bounded by the operator's (:mod:`.tenant`):
   a tenant may make monitoring of its VM more patient, never costlier
   for the host (a long timeout holds agent slots others need).
   A bad per-instance value is ignored with a note, never fatal: one
   instance's metadata must not stop the monitoring of the host.

The result records which layer supplied each value (``sources``),
because an operator must never have to guess why a VM is watched the
way it is (:func:`explain`).

The package is split along those seams -- :mod:`.model` (the data),
:mod:`.loader` (the file), :mod:`.resolve` (the layering), :mod:`.explain`
(the answer to "why") -- and knows nothing about any probe's parameters:
each probe class checks its own (``Probe.__init__``) and warns about its
own combinations with the policy (``Probe.policy_notes``), so a
third-party probe is a first-class citizen. Callers import from here.
"""
from __future__ import annotations

from masakarimonitors_iim.policy.explain import explain
from masakarimonitors_iim.policy.loader import (
    FORMAT_VERSION,
    MAX_FILE_BYTES,
    load_policy_file,
)
from masakarimonitors_iim.policy.model import (
    DEFAULT_INSTANCE_KEYS,
    FIELDS,
    INSTANCE_KEY_ORIGINS,
    INSTANCE_KEY_PREFIX,
    SCALAR_FIELDS,
    Defaults,
    EffectivePolicy,
    Match,
    PolicyError,
    PolicyFile,
    ProbeSpec,
    Rule,
)
from masakarimonitors_iim.policy.resolve import resolve

__all__ = [
    "DEFAULT_INSTANCE_KEYS",
    "FIELDS",
    "FORMAT_VERSION",
    "INSTANCE_KEY_ORIGINS",
    "INSTANCE_KEY_PREFIX",
    "MAX_FILE_BYTES",
    "SCALAR_FIELDS",
    "Defaults",
    "EffectivePolicy",
    "Match",
    "PolicyError",
    "PolicyFile",
    "ProbeSpec",
    "Rule",
    "explain",
    "load_policy_file",
    "resolve",
]
