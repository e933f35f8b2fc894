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
import logging
import os
import stat
import time

from .._loopfs import (
    LoopFsError,
    loops_backed_by,
    make_ext4,
    mount_ext4,
    mounts_under,
    run,
)
from .._loopfs import unavailable as _loop_unavailable

log = logging.getLogger("sbx.runtime.disk")

LOOP_RELEASE_S = 2.0
DiskSetupError = LoopFsError  # the sandbox's disk could not be made
_run = run


def unavailable() -> str | None:
    """Why disk quotas cannot work on this host (None: they can)."""
    return _loop_unavailable("overlay")


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
    # no journal: the disk dies with the sandbox
    await make_ext4(img, size_mib, journal=False)
    await mount_ext4(img, disk)
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
