"""Volumes (server layer): Modal's `modal.Volume`, per principal.

- The records (name, ephemeral, heartbeat, sweep) are KvService's, kind "volume": a volume
  is named like a Dict and deleted the same way; deleting one removes its files.
- The files live on the host in the principal's own quota filesystem
  (`runtimes.VolumeDisks`); containers bind-mount a volume's directory read-write
  (`binds`). Writes in a container are visible at once to every other container and to
  the API (one filesystem, no copy): `commit()` and `reload()` have nothing to move, and
  are kept for Modal programs (docs/storage.md).
- Reads and writes from outside go through `_volume_fs` (never following a link) in
  threads, and stream: no file is held whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, AsyncIterator

from runtimes import VolumeDisks
from security import Principal

from ...wire import VolumeCopy, VolumeListing, VolumeMount, VolumeUsage
from ...wire import errors as E
from . import _volume_fs as vfs

log = logging.getLogger("sbx.volumes")

KIND = "volume"


class VolumeService:
    def __init__(self, kv: Any, *, root: str, quota_mib: int,
                 disks: VolumeDisks | None = None):
        self.kv = kv
        self.disks = disks or VolumeDisks(root, quota_mib)
        kv.on_delete[KIND] = self._remove_files

    async def close(self) -> None:
        await self.disks.close()

    async def _dir(self, rec: dict[str, Any]) -> str:
        try:
            root = await self.disks.ensure(rec["owner"])
        except Exception as e:  # LoopFsError, OSError: the host's side
            log.error("volumes of %s unavailable: %s", rec["owner"], e)
            raise E.RuntimeUnavailableError(f"the volume filesystem could not be mounted: {e} "
                                            "(see the server's log)") from None
        path = os.path.join(root, rec["id"])
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        return path

    async def _remove_files(self, rec: dict[str, Any]) -> None:
        root = await self.disks.ensure(rec["owner"])
        root_fd = vfs.open_root(root)
        try:
            await asyncio.to_thread(vfs.remove, root_fd, rec["id"], True)
        except E.SandboxFileNotFoundError:
            pass
        finally:
            os.close(root_fd)

    # ---- containers -------------------------------------------------------------------
    async def binds(self, owner: str,
                    mounts: list[VolumeMount]) -> tuple[tuple[str, str, bool], ...]:
        """(host directory, path inside, read_only) of each mount, after checking that
        `owner` may use the volume."""
        out = []
        for m in mounts:
            rec = await self.kv.store.kv_get(m.volume_id)
            if rec is None or rec["kind"] != KIND or not (owner == "admin"
                                                         or rec["owner"] == owner):
                raise E.NotFoundError(f"no volume {m.volume_id!r} (deleted, or an ephemeral "
                                      "one whose context ended)")
            out.append((await self._dir(rec), m.path, m.read_only))
        return tuple(out)

    # ---- the API ----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _root(self, who: Principal, volume_id: str) -> AsyncIterator[int]:
        rec = await self.kv.get(who, KIND, volume_id)
        path = await self._dir(rec)
        fd = vfs.open_root(path)
        try:
            yield fd
        finally:
            os.close(fd)

    async def listdir(self, who: Principal, volume_id: str, path: str,
                      recursive: bool) -> VolumeListing:
        async with self._root(who, volume_id) as root:
            entries, truncated = await asyncio.to_thread(vfs.list_dir, root, path, recursive)
        return VolumeListing(entries=entries, truncated=truncated)

    async def read(self, who: Principal, volume_id: str, path: str) -> tuple[AsyncIterator[bytes], int]:
        """The file's chunks (read in a thread, one at a time) and its size."""
        async with self._root(who, volume_id) as root:
            fd, size = await asyncio.to_thread(vfs.open_file, root, path)
        chunks = vfs.read_chunks(fd)

        async def stream() -> AsyncIterator[bytes]:
            try:
                while True:
                    chunk = await asyncio.to_thread(next, chunks, b"")
                    if not chunk:
                        return
                    yield chunk
            finally:
                chunks.close()
        return stream(), size

    async def write(self, who: Principal, volume_id: str, path: str,
                    body: AsyncIterator[bytes], *, force: bool, mode: int | None) -> int:
        """Stream `body` into `path`; the file appears whole or not at all. Its size."""
        async with self._root(who, volume_id) as root:
            up = await asyncio.to_thread(vfs.Upload, root, path, force=force, mode=mode)
        try:
            pending = bytearray()
            async for chunk in body:
                pending += chunk
                if len(pending) >= vfs.CHUNK:
                    await asyncio.to_thread(up.write, bytes(pending))
                    pending.clear()
            if pending:
                await asyncio.to_thread(up.write, bytes(pending))
            await asyncio.to_thread(up.commit)
        except BaseException:
            await asyncio.to_thread(up.abort)
            raise
        return up.size

    async def remove(self, who: Principal, volume_id: str, path: str, recursive: bool) -> None:
        async with self._root(who, volume_id) as root:
            await asyncio.to_thread(vfs.remove, root, path, recursive)

    async def copy(self, who: Principal, volume_id: str, body: VolumeCopy) -> None:
        async with self._root(who, volume_id) as root:
            await asyncio.to_thread(vfs.copy, root, body.src_paths, body.dst_path,
                                    body.recursive)

    async def usage(self, who: Principal, volume_id: str) -> VolumeUsage:
        rec = await self.kv.get(who, KIND, volume_id)
        await self._dir(rec)
        used, quota, enforced = await asyncio.to_thread(self.disks.usage, rec["owner"])
        return VolumeUsage(used_bytes=used, quota_bytes=quota, enforced=enforced)
