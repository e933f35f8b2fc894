"""Per-sandbox writable disk with a size limit (runtimes layer). Must not import the server.

Why not runsc's own overlay: with `--overlay2=root:memory` every write is sandbox memory
(a disk fill ends as an OOM kill). `--overlay2=root:/dir` puts the overlay's filestore in
a host directory, but this runsc mmaps that file: when the directory's filesystem is full
the sentry takes SIGBUS ("fatal error: fault") and the whole sandbox dies (measured on
0.0~20221219.0). So the quota is enforced by the host kernel instead:

  sandboxes/<id>/disk.img   sparse file, a fresh ext4 (no journal, no reserved blocks)
  sandboxes/<id>/disk/      that ext4, loop-mounted nodev,nosuid,noatime
  sandboxes/<id>/disk/upper, disk/work   the overlay's upper and work directories
  sandboxes/<id>/rootfs/    overlayfs: lower = the shared read-only image rootfs

runsc then runs with `--overlay2=none` and this merged directory as its root: writes go
through the gofer to ext4, which answers ENOSPC when the quota is reached. The sandbox
lives on, and the page cache those writes use is reclaimable, so disk use does not count
against the memory limit the way the in-memory overlay does. `mount -o loop` sets
autoclear: unmounting the ext4 frees the loop device.

Teardown is stateless (it reads /proc/self/mountinfo and /sys/block/loop*), so it also
works after a server restart or for a sandbox the collector found.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import shutil
import stat
import time

from .._errors import RuntimeFault
from .._hostcmd import HostCommandError, run_command

DISK_CMD_TIMEOUT_S = 120.0  # mkfs.ext4, mount, umount, losetup

log = logging.getLogger("sbx.runtime.disk")

LOOP_RELEASE_S = 2.0
TOOLS = ("mkfs.ext4", "mount", "umount", "losetup")
# no journal (the disk dies with the sandbox), no blocks reserved for root, one inode per
# 8 KiB (package trees are many small files), inode tables initialised lazily
MKFS_ARGS = ("-q", "-F", "-m", "0", "-i", "8192", "-O", "^has_journal",
             "-E", "lazy_itable_init=1,nodiscard")


def unavailable() -> str | None:
    """Why disk quotas cannot work on this host (None: they can)."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return (f"{', '.join(missing)} not found: install e2fsprogs and mount "
                "(`apt-get install e2fsprogs mount`)")
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control is missing): `modprobe loop`"
    try:
        with open("/proc/filesystems") as f:
            fss = {line.split()[-1] for line in f if line.strip()}
    except OSError:
        fss = set()
    for fs in ("overlay", "ext4"):
        if fs not in fss:
            return f"the kernel has no {fs} filesystem: `modprobe {fs}`"
    return None


async def _run(*argv: str, check: bool = True) -> tuple[int, str]:
    try:
        res = await run_command(argv, check=check, merge_stderr=True, timeout_s=DISK_CMD_TIMEOUT_S)
    except HostCommandError as e:
        raise DiskSetupError(str(e)) from None
    return res.returncode if res.returncode is not None else -1, res.out.strip()


class DiskSetupError(RuntimeFault):
    """The sandbox's disk could not be made."""


def _tmp_dir_of(lower: str) -> str | None:
    """How /tmp of the image looks: 'dir', 'missing', or None (anything else, e.g. a
    symlink: never resolved on the host)."""
    try:
        st = os.lstat(os.path.join(lower, "tmp"))
    except FileNotFoundError:
        return "missing"
    return "dir" if stat.S_ISDIR(st.st_mode) else None


async def create(base: str, lower: str, size_mib: int) -> tuple[str, str | None]:
    """Make `base`/rootfs: `lower` plus a private writable layer of `size_mib` MiB.
    Returns (merged rootfs, host directory to bind at /tmp or None). On failure
    everything made so far is undone by `destroy(base)` (the caller's job)."""
    img, disk, merged = (os.path.join(base, n) for n in ("disk.img", "disk", "rootfs"))
    os.makedirs(disk, mode=0o700)
    os.makedirs(merged, mode=0o755)
    fd = os.open(img, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size_mib * 1024 * 1024)  # sparse: host blocks only as written
    finally:
        os.close(fd)
    await _run("mkfs.ext4", *MKFS_ARGS, img)
    await _run("mount", "-t", "ext4", "-o", "loop,nodev,nosuid,noatime", img, disk)
    upper, work = os.path.join(disk, "upper"), os.path.join(disk, "work")
    os.mkdir(upper, 0o755)
    os.mkdir(work, 0o700)
    tmp = _tmp_dir_of(lower)
    if tmp == "missing":  # an image without /tmp still gets one, on the quota
        os.mkdir(os.path.join(upper, "tmp"))
        os.chmod(os.path.join(upper, "tmp"), 0o1777)
        tmp = "dir"
    opts = (f"lowerdir={lower},upperdir={upper},workdir={work},"
            "redirect_dir=off,metacopy=off,index=off")
    await _run("mount", "-t", "overlay", "overlay", "-o", f"nodev,nosuid,{opts}", merged)
    return merged, os.path.join(merged, "tmp") if tmp == "dir" else None


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below `prefix`, deepest first."""
    prefix = prefix.rstrip("/")
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = _unescape(line.split()[4])
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def loops_backed_by(prefix: str) -> list[str]:
    """Loop devices whose backing file is under `prefix` (e.g. /dev/loop3)."""
    found = []
    for path in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(path) as f:
                backing = f.read().strip()
        except OSError:
            continue
        backing = backing.removesuffix(" (deleted)")
        if backing.startswith(prefix.rstrip("/") + "/"):
            found.append("/dev/" + path.split("/")[3])
    return found


async def destroy(base: str) -> bool:
    """Unmount the sandbox's rootfs and disk and free its loop device. True when nothing
    is left mounted under `base` (only then may the caller remove the directory)."""
    for point in mounts_under(base):
        rc, out = await _run("umount", point, check=False)
        if rc != 0:
            log.warning("umount %s failed (%s); detaching lazily", point, out)
            await _run("umount", "-l", point, check=False)
    # autoclear frees the loop device once the ext4 is unmounted, asynchronously
    deadline = time.monotonic() + LOOP_RELEASE_S
    while loops_backed_by(base) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for dev in loops_backed_by(base):
        # seen only when many sandboxes start and stop at once (a runsc starting up
        # still holds a copy of the mount for a moment); -d frees it once unused
        log.info("loop device %s still attached to %s after %.0fs; detaching it", dev,
                 base, LOOP_RELEASE_S)
        await _run("losetup", "-d", dev, check=False)
    left = mounts_under(base)
    if left:
        log.error("still mounted after teardown, leaving %s in place: %s", base, left)
    return not left
