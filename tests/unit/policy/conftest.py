"""Fixtures for policy tests: domains, policy files, and entry points.

``install_dist`` makes a distribution (dist-info with entry_points.txt,
plus its modules) visible to importlib.metadata and stevedore for one
test, the way ``pip install`` of a third-party package would.

stevedore caches entry points twice: per namespace in
``ExtensionManager.ENTRY_POINT_CACHE`` (class attribute, for the life of
the process) and per ``sys.path`` in ``stevedore._cache`` (in memory, and
on disk under ~/.cache/python-entrypoints, keyed by path and mtimes).
The fixture gives each test a fresh namespace cache and a private
``_cache.Cache`` whose directory holds a ``.disable`` file, so nothing
is read from or written to the user's cache and nothing leaks between
tests. It also empties ``probes.base.probe_class``'s cache (the classes
policy resolution asks for notes), before and after each "install".
"""
from __future__ import annotations

import importlib
import pathlib
import sys
import textwrap
from typing import Callable

import pytest
from stevedore import _cache as stevedore_cache
from stevedore import extension

from masakarimonitors_iim.hypervisor.types import DomainInfo, DomainState, NovaMetadata
from masakarimonitors_iim.probes.base import probe_class

INSTANCE_UUID = "0e5b2c1a-6f7d-4c3b-9a8e-1d2c3b4a5f60"


@pytest.fixture
def install_dist(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Callable:
    site = tmp_path / "site"
    site.mkdir()
    cache_dir = tmp_path / "stevedore-cache"
    cache_dir.mkdir()
    (cache_dir / ".disable").touch()
    cache = stevedore_cache.Cache(cache_dir=str(cache_dir))
    monkeypatch.setattr(stevedore_cache, "get_group_all", cache.get_group_all)
    monkeypatch.setattr(stevedore_cache, "get_group_named", cache.get_group_named)
    monkeypatch.setattr(stevedore_cache, "get_single", cache.get_single)
    monkeypatch.setattr(extension.ExtensionManager, "ENTRY_POINT_CACHE", {})
    monkeypatch.syspath_prepend(str(site))
    added_modules: list[str] = []

    def install(dist: str, entry_points: dict[str, dict[str, str]],
                modules: dict[str, str] | None = None) -> None:
        info = site / ("%s-1.0.dist-info" % dist.replace("-", "_"))
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % dist)
        lines = []
        for group, eps in entry_points.items():
            lines.append("[%s]" % group)
            lines.extend("%s = %s" % (name, target) for name, target in eps.items())
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for name, source in (modules or {}).items():
            (site / ("%s.py" % name)).write_text(textwrap.dedent(source))
            added_modules.append(name)
        importlib.invalidate_caches()
        # Forget what stevedore saw before this "pip install".
        extension.ExtensionManager.ENTRY_POINT_CACHE.clear()
        cache._internal.clear()
        probe_class.cache_clear()

    probe_class.cache_clear()
    yield install
    probe_class.cache_clear()
    for name in added_modules:
        sys.modules.pop(name, None)


@pytest.fixture
def with_reset_marker(install_dist: Callable) -> None:
    """Register reset_marker until the package's own entry points do;
    an identical entry point from both is de-duplicated by stevedore."""
    install_dist("iim-test-probes", {"masakarimonitors_iim.probes": {
        "reset_marker": "masakarimonitors_iim.probes.reset_marker:ResetMarkerProbe"}})


@pytest.fixture
def write_policy(tmp_path: pathlib.Path) -> Callable[[str], str]:
    def write(text: str, name: str = "policy.yaml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


@pytest.fixture
def make_domain() -> Callable[..., DomainInfo]:
    def make(uuid: str = INSTANCE_UUID, name: str = "instance-0000002a",
             nova: bool = True, **fields) -> DomainInfo:
        meta = None
        if nova:
            values = {"instance_name": "web-1", "flavor_name": "m1.small",
                      "image_uuid": "5a1d2c3b-0000-4000-8000-00000000cafe",
                      "project_uuid": "9f8e7d6c5b4a49388271605f4e3d2c1b",
                      "project_name": "shop"}
            values.update(fields)
            meta = NovaMetadata(**values)
        return DomainInfo(uuid=uuid, name=name, state=DomainState.RUNNING,
                          has_agent=True, nova=meta)
    return make
