"""Install what the testbed needs: Debian packages, a guest kernel, masakari,
and masakari-monitors with this project in it (the drop-in test).

Every step checks first and does nothing when its result is already there, so
a second ``setup`` costs a few dpkg-query calls. Results that are not Debian
packages live under one cache directory (see :func:`cache_dir`) that survives
between runs on the same machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .procs import TestbedError, run

#: Debian packages the testbed uses. Not libvirt-daemon-system: it pulls in
#: systemd units and a system-wide daemon we do not want; we run our own.
APT_PACKAGES = (
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "qemu-system-x86",
    "qemu-guest-agent",
    "busybox-static",
    "cpio",
    "rabbitmq-server",
    # Debian's python3 cannot create the masakari venv without it.
    "python3-venv",
)

#: The metapackage whose dependency names the current cloud kernel. The cloud
#: flavour is small and has virtio as loadable modules, which the guest needs.
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"

#: Kernel modules the guest loads, in dependency order (paths below
#: lib/modules/VERSION/kernel/drivers).
GUEST_MODULES = (
    "virtio/virtio_ring",
    "virtio/virtio",
    "virtio/virtio_pci_modern_dev",
    "virtio/virtio_pci_legacy_dev",
    "virtio/virtio_pci",
    "char/virtio_console",
)

MASAKARI_REQUIREMENT = "masakari==22.0.0"
MASAKARI_MONITORS_REQUIREMENT = "masakari-monitors==22.0.0"

#: The root of the checkout this file is in (a CI clone or a developer's),
#: installed into the masakari-monitors venv in editable mode.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Files whose change means the project must be installed again (its
#: dependencies or entry points may have changed).
PROJECT_INSTALL_INPUTS = ("setup.cfg", "setup.py", "requirements.txt")

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def cache_dir() -> Path:
    """Directory for downloaded and built artefacts, stable across runs.

    ``TESTBED_CACHE`` wins; otherwise the XDG cache directory is used.
    """
    explicit = os.environ.get("TESTBED_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "masakarimonitors-iim-testbed"


def _log(msg: str) -> None:
    print(f"testbed setup: {msg}", file=sys.stderr, flush=True)


class _Apt:
    """apt-get wrapper that runs ``apt-get update`` at most once per setup."""

    def __init__(self) -> None:
        self._updated = False

    def update(self) -> None:
        if not self._updated:
            _log("apt-get update")
            run(["apt-get", "update", "-q"], timeout=600, env=self._env())
            self._updated = True

    @staticmethod
    def _env() -> dict[str, str]:
        return {**os.environ, **_APT_ENV}

    def missing(self, packages: tuple[str, ...]) -> list[str]:
        result = []
        for pkg in packages:
            proc = run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
            if proc.returncode != 0 or "install ok installed" not in proc.stdout:
                result.append(pkg)
        return result

    def install(self, packages: list[str]) -> None:
        self.update()
        _log(f"apt-get install {' '.join(packages)}")
        with _no_service_start():
            run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                timeout=900,
                env=self._env(),
            )

    def depends(self, package: str) -> list[str]:
        """Direct dependencies of ``package``; updates the lists if it is unknown."""
        for attempt in range(2):
            proc = run(["apt-cache", "depends", package], check=False)
            deps = [
                line.split(":", 1)[1].strip()
                for line in proc.stdout.splitlines()
                if line.strip().startswith("Depends:")
            ]
            if deps:
                return deps
            if attempt == 0:
                self.update()
        raise TestbedError(f"apt-cache knows no dependencies of {package}")


class _no_service_start:
    """Stop package scripts from starting services (rabbitmq-server would
    otherwise start system-wide, listening on all interfaces).

    Debian's invoke-rc.d consults /usr/sbin/policy-rc.d; exit 101 means
    "action forbidden". An existing policy file is left alone.
    """

    _path = Path("/usr/sbin/policy-rc.d")

    def __enter__(self) -> None:
        self._created = not self._path.exists()
        if self._created:
            self._path.write_text("#!/bin/sh\n# testbed: no services during install\nexit 101\n")
            self._path.chmod(0o755)

    def __exit__(self, *exc: object) -> None:
        if self._created:
            self._path.unlink(missing_ok=True)


def ensure_packages(apt: _Apt) -> None:
    """Install the Debian packages that are not installed yet."""
    missing = apt.missing(APT_PACKAGES)
    if missing:
        apt.install(missing)


def ensure_kernel(apt: _Apt, cache: Path) -> Path:
    """Provide ``cache/kernel/{vmlinuz,modules/*.ko}`` from the Debian cloud kernel.

    The package is only downloaded and unpacked, never installed: the host's
    own kernel stays untouched.
    """
    dest = cache / "kernel"
    if (dest / "vmlinuz").exists() and (dest / "version").exists():
        return dest
    image_pkg = next(d for d in apt.depends(KERNEL_METAPACKAGE) if d.startswith("linux-image-"))
    _log(f"downloading guest kernel {image_pkg}")
    with tempfile.TemporaryDirectory(dir=cache) as tmp_str:
        tmp = Path(tmp_str)
        run(["apt-get", "download", "-q", image_pkg], cwd=tmp, timeout=600)
        deb = next(tmp.glob("*.deb"))
        root = tmp / "root"
        run(["dpkg-deb", "-x", str(deb), str(root)], timeout=300)
        (version,) = [p.name for p in (root / "lib/modules").iterdir()]
        staging = tmp / "kernel"
        (staging / "modules").mkdir(parents=True)
        shutil.copy(root / "boot" / f"vmlinuz-{version}", staging / "vmlinuz")
        drivers = root / "lib/modules" / version / "kernel/drivers"
        for mod in GUEST_MODULES:
            src = drivers / f"{mod}.ko"
            if not src.exists():
                raise TestbedError(f"{image_pkg} has no module {mod}.ko (compressed modules?)")
            shutil.copy(src, staging / "modules" / src.name)
        (staging / "version").write_text(version + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest


def masakari_venv(cache: Path) -> Path:
    """Path of the virtualenv that holds masakari (may not exist yet)."""
    version = MASAKARI_REQUIREMENT.split("==")[1]
    return cache / f"masakari-{version}-py{sys.version_info.major}{sys.version_info.minor}"


def ensure_masakari(cache: Path) -> Path:
    """Create a virtualenv with masakari-api/-engine unless a complete one exists.

    Masakari gets its own venv because it pins many OpenStack libraries and
    runs with eventlet; none of that should leak into the project's venv. A
    marker file written last tells a complete venv from an interrupted one.
    """
    venv = masakari_venv(cache)
    marker = venv / ".testbed-complete"
    if marker.exists() and (venv / "bin/masakari-engine").exists():
        try:
            run([str(venv / "bin/python"), "-c", "import masakari"], timeout=60)
            return venv
        except TestbedError:
            _log(f"{venv} is broken, recreating it")
    if venv.exists():
        shutil.rmtree(venv)
    _log(f"creating {venv} with {MASAKARI_REQUIREMENT}")
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", str(venv)], timeout=300)
    run(
        [
            str(venv / "bin/pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            MASAKARI_REQUIREMENT,
        ],
        timeout=900,
    )
    marker.write_text(MASAKARI_REQUIREMENT + "\n")
    return venv


def monitors_venv(cache: Path) -> Path:
    """Path of the virtualenv that holds masakari-monitors and this project."""
    version = MASAKARI_MONITORS_REQUIREMENT.split("==")[1]
    return cache / f"masakari-monitors-{version}-py{sys.version_info.major}{sys.version_info.minor}"


def _monitors_stamp(root: Path) -> str:
    """What the masakari-monitors venv was made from: the requirement, the
    checkout installed into it, and that checkout's install inputs."""
    digest = hashlib.sha256()
    for name in PROJECT_INSTALL_INPUTS:
        path = root / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return f"{MASAKARI_MONITORS_REQUIREMENT}\n{root}\n{digest.hexdigest()}\n"


def ensure_masakari_monitors(cache: Path, root: Path = PROJECT_ROOT) -> Path:
    """A virtualenv with masakari-monitors and this project (editable, from
    ``root``), unless a complete one made from the same inputs exists.

    Its own venv, as for masakari: masakari-monitors brings eventlet and
    oslo.service, which the project's venv must not have. The stamp written
    last records what it was made from; a different checkout or changed
    requirements reinstall the project only.
    """
    venv = monitors_venv(cache)
    marker = venv / ".testbed-complete"
    stamp = _monitors_stamp(root)
    pip = [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check"]
    binary = venv / "bin/masakari-introspectiveinstancemonitor"
    if marker.exists() and binary.exists():
        if marker.read_text() == stamp and _monitors_venv_works(venv, root):
            return venv
        if _imports(venv, "import masakarimonitors"):
            _log(f"installing {root} into {venv} again")
            marker.unlink()
            run([*pip, "-e", str(root)], timeout=900)
            if not _monitors_venv_works(venv, root):
                raise TestbedError(f"{venv}: {root} installed but not importable from there")
            marker.write_text(stamp)
            return venv
        _log(f"{venv} is broken, recreating it")
    if venv.exists():
        shutil.rmtree(venv)
    _log(f"creating {venv} with {MASAKARI_MONITORS_REQUIREMENT} and {root}")
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", str(venv)], timeout=300)
    run([*pip, MASAKARI_MONITORS_REQUIREMENT], timeout=900)
    run([*pip, "-e", str(root)], timeout=900)
    if not _monitors_venv_works(venv, root):
        raise TestbedError(f"{venv}: {root} installed but not importable from there")
    marker.write_text(stamp)
    return venv


def _imports(venv: Path, code: str) -> bool:
    # Run from the venv, so that a checkout in the current directory cannot
    # stand in for a package the venv lacks.
    try:
        run([str(venv / "bin/python"), "-c", code], timeout=60, cwd=venv)
        return True
    except TestbedError:
        return False


def _monitors_venv_works(venv: Path, root: Path) -> bool:
    """Both packages import, and the project is the one from ``root``."""
    package = (root / "masakarimonitors_iim").resolve()
    return _imports(
        venv,
        "import masakarimonitors, masakarimonitors_iim, pathlib, sys; "
        "here = pathlib.Path(masakarimonitors_iim.__file__).resolve().parent; "
        f"sys.exit(here != pathlib.Path({str(package)!r}))",
    )


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Serialise installs and builds of concurrent testbeds sharing ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def setup(cache: Path | None = None) -> Path:
    """Install everything; return the cache directory used."""
    cache = cache or cache_dir()
    started = time.monotonic()
    with cache_lock(cache):
        apt = _Apt()
        ensure_packages(apt)
        ensure_kernel(apt, cache)
        ensure_masakari(cache)
        ensure_masakari_monitors(cache)
    _log(f"installed in {time.monotonic() - started:.1f}s (cache {cache})")
    return cache
