"""Build the guest: a kernel plus an initramfs with busybox, qemu-ga and the demo app.

The guest needs no disk and no network: everything lives in the initramfs,
which keeps a TCG boot to a few seconds. A guest may be given one small
data disk (``create_guest(disk=True)``): the image carries virtio_blk for
it, and ``/init`` mounts it at ``/data``, so tests can freeze a real
filesystem (qemu-ga's fsfreeze does nothing without one) and make block
I/O libvirt counts. The image is rebuilt only when one
of its inputs changes (the scripts in ``guest/``, the kernel, busybox or
qemu-ga), so its cache directory name is a hash of those inputs.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .install import GUEST_MODULES, cache_lock
from .procs import run

GUEST_FILES = Path(__file__).parent / "guest"
#: Modules for the optional data disk, beyond install.GUEST_MODULES (paths
#: below lib/modules/VERSION/kernel/drivers); ext4 is built into the
#: Debian cloud kernel.
DISK_MODULES = ("block/virtio_blk",)
BUSYBOX = Path("/bin/busybox")
QEMU_GA = Path("/usr/sbin/qemu-ga")

#: Where each file from ``guest/`` goes inside the initramfs.
_LAYOUT = {
    "init": "init",
    "demo-app": "usr/bin/demo-app",
    "app-health": "usr/bin/app-health",
    "app-ctl": "usr/bin/app-ctl",
}


@dataclass(frozen=True)
class GuestImage:
    """Paths handed to libvirt for direct kernel boot."""

    kernel: Path
    initrd: Path


def ensure_disk_modules(kernel_dir: Path) -> None:
    """Add :data:`DISK_MODULES` to ``kernel_dir/modules`` when missing,
    from the Debian package of the very kernel version there (a module
    of another build would not load). Caller holds the cache lock."""
    modules = kernel_dir / "modules"
    missing = [m for m in DISK_MODULES if not (modules / (m.rsplit("/", 1)[1] + ".ko")).exists()]
    if not missing:
        return
    version = (kernel_dir / "version").read_text().strip()
    with tempfile.TemporaryDirectory(dir=kernel_dir.parent) as tmp_str:
        tmp = Path(tmp_str)
        run(["apt-get", "download", "-q", f"linux-image-{version}"], cwd=tmp, timeout=600)
        deb = next(tmp.glob("*.deb"))
        run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], timeout=300)
        drivers = tmp / "root/lib/modules" / version / "kernel/drivers"
        for mod in missing:
            src = drivers / f"{mod}.ko"
            if not src.exists():
                raise FileNotFoundError(f"linux-image-{version} has no module {mod}.ko")
            shutil.copy(src, modules / (src.name + ".part"))
            (modules / (src.name + ".part")).rename(modules / src.name)


def _inputs_digest(kernel_dir: Path) -> str:
    digest = hashlib.sha256()
    digest.update(",".join(DISK_MODULES).encode() + b"\0")
    for name in sorted(_LAYOUT):
        digest.update(name.encode() + b"\0" + (GUEST_FILES / name).read_bytes())
    digest.update((kernel_dir / "version").read_bytes())
    for binary in (BUSYBOX, QEMU_GA):
        stat = binary.stat()
        digest.update(f"{binary}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _shared_libraries(binary: Path) -> list[Path]:
    """Absolute paths of the libraries (and loader) ``binary`` links against."""
    out = run(["ldd", str(binary)]).stdout
    return [Path(p) for p in re.findall(r"(/\S+)", out)]


def _populate(root: Path, kernel_dir: Path) -> None:
    for sub in (
        "bin",
        "sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "root",
        "lib/modules",
        "usr/bin",
        "usr/sbin",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    for applet in run([str(BUSYBOX), "--list"]).stdout.split():
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    shutil.copy(QEMU_GA, root / "usr/sbin/qemu-ga")
    for lib in _shared_libraries(QEMU_GA):
        dest = root / lib.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, dest)  # follows symlinks: the guest gets real files
    for mod in GUEST_MODULES + DISK_MODULES:
        name = mod.rsplit("/", 1)[1] + ".ko"
        shutil.copy(kernel_dir / "modules" / name, root / "lib/modules" / name)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    for name, inside in _LAYOUT.items():
        target = root / inside
        shutil.copy(GUEST_FILES / name, target)
        target.chmod(0o755)


def ensure_guest_image(cache: Path, kernel_dir: Path) -> GuestImage:
    """Return the guest image for the current inputs, building it if needed."""
    dest = cache / f"guest-{_inputs_digest(kernel_dir)}"
    image = GuestImage(kernel=dest / "vmlinuz", initrd=dest / "initrd.img")
    if image.initrd.exists() and image.kernel.exists():
        return image
    with cache_lock(cache):
        if not (image.initrd.exists() and image.kernel.exists()):
            ensure_disk_modules(kernel_dir)
            _build(cache, dest, kernel_dir)
    return image


def _build(cache: Path, dest: Path, kernel_dir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache) as tmp_str:
        tmp = Path(tmp_str)
        root = tmp / "root"
        _populate(root, kernel_dir)
        staging = tmp / "image"
        staging.mkdir()
        run(
            ["sh", "-ec", f"find . | cpio -o -H newc --quiet | gzip -1 > {staging / 'initrd.img'}"],
            cwd=root,
            timeout=120,
        )
        shutil.copy(kernel_dir / "vmlinuz", staging / "vmlinuz")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    # Drop images of other inputs, but only day-old ones: another checkout
    # (other guest scripts) may share this cache and still boot its image.
    for old in cache.glob("guest-*"):
        if old != dest and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
