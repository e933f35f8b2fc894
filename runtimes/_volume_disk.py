"""Where volumes live on the host (runtimes layer). Must not import the server.

Every volume of one principal lives in that principal's own filesystem, so the quota is per
principal and a write past it gets ENOSPC inside a container (through the gofer) as in an
upload from outside:

  <root>/<key>/disk.img    sparse file holding an ext4 with a journal (volumes outlive
                           containers and server restarts), `quota_mib` large
  <root>/<key>/fs/         that ext4, loop-mounted nodev,nosuid,noatime: a device node made
                           inside can never be opened, a setuid bit means nothing
  <root>/<key>/fs/<volume_id>/   one volume: what containers bind-mount read-write

`key` is a hash of the principal's name. The filesystem stays mounted while the server runs;
`close()` unmounts what nothing else holds. A loop device is never attached twice to one
image: after a restart an image still attached (a running sandbox's runsc holds the mount)
is mounted again from that same device, never through a second one (two kernels' views of
one ext4 would corrupt it).

Without loop devices (`unavailable()`), volumes are plain directories and the quota is not
enforced; `sbx doctor` and the server's log say so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os

from . import _loopfs

log = logging.getLogger("sbx.runtime.volumes")


class VolumeDisks:
    """The host side of every principal's volumes, under `root`."""

    def __init__(self, root: str, quota_mib: int):
        self.root = root
        self.quota_mib = quota_mib
        self.unavailable = _loopfs.unavailable()
        self._locks: dict[str, asyncio.Lock] = {}
        self._warned = False

    @staticmethod
    def key(owner: str) -> str:
        return hashlib.sha256(owner.encode()).hexdigest()[:16]

    def _paths(self, owner: str) -> tuple[str, str, str]:
        base = os.path.join(self.root, self.key(owner))
        return base, os.path.join(base, "disk.img"), os.path.join(base, "fs")

    async def ensure(self, owner: str) -> str:
        """The mounted root of `owner`'s volumes (made and mounted on first use)."""
        base, img, fs = self._paths(owner)
        if os.path.ismount(fs):
            return fs
        async with self._locks.setdefault(owner, asyncio.Lock()):
            if os.path.ismount(fs):
                return fs
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            os.makedirs(fs, mode=0o700, exist_ok=True)
            if self.unavailable:
                if not self._warned:
                    self._warned = True
                    log.warning("volume quotas are not enforced: %s", self.unavailable)
                return fs
            if not os.path.exists(img):
                if os.listdir(fs):
                    raise _loopfs.LoopFsError(
                        f"{fs} holds files but {img} is missing: move them away, or restore "
                        "the image, then retry")
                await _loopfs.make_ext4(img, self.quota_mib, journal=True)
                log.info("made the volume filesystem of %s (%d MiB)", self.key(owner),
                         self.quota_mib)
            attached = _loopfs.loops_backed_by(img, exact=True)
            if not attached:
                await self._grow(img)
            await _loopfs.mount_ext4(attached[0] if attached else img, fs)
            return fs

    async def _grow(self, img: str) -> None:
        """A raised quota (SBX_VOLUME_QUOTA_MIB) grows an unmounted image; a lowered one
        is only logged (shrinking could lose data)."""
        size = os.path.getsize(img)
        want = self.quota_mib * 1024 * 1024
        if size == want:
            return
        if size > want:
            log.warning("%s is %d MiB, above the quota of %d MiB: kept as is (volumes are "
                        "never shrunk)", img, size >> 20, self.quota_mib)
            return
        await _loopfs.run("e2fsck", "-f", "-p", img, check=False)
        with open(img, "r+b") as f:
            f.truncate(want)
        await _loopfs.run("resize2fs", img)
        log.info("grew %s to %d MiB", img, self.quota_mib)

    def usage(self, owner: str) -> tuple[int, int, bool]:
        """(used bytes, quota bytes, enforced) of `owner`'s volumes; call after ensure()."""
        _base, _img, fs = self._paths(owner)
        if self.unavailable or not os.path.ismount(fs):
            return _du(fs), self.quota_mib * 1024 * 1024, False
        st = os.statvfs(fs)
        return ((st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize, True)

    async def close(self) -> None:
        """Unmount every principal's filesystem that nothing holds (a running sandbox that
        outlives the server keeps its own reference; its loop device stays attached and
        the next server mounts that same device again)."""
        if not os.path.isdir(self.root):
            return
        for key in sorted(os.listdir(self.root)):
            fs = os.path.join(self.root, key, "fs")
            if os.path.ismount(fs):
                rc, out = await _loopfs.run("umount", fs, check=False)
                if rc != 0:
                    log.warning("volume filesystem %s stays mounted: %s", fs, out)


def _du(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total
