"""Volume (public layer): Modal's `modal.Volume`, a directory tree per principal on the
server that functions, classes and sandboxes mount and the client reads and writes.

    vol = modal.Volume.from_name("models", create_if_missing=True)

    @app.function(volumes={"/models": vol})
    def train():
        open("/models/w.bin", "wb").write(...)
        vol.commit()                      # kept for Modal programs: see below

    with vol.batch_upload() as batch:     # from outside
        batch.put_file("local.txt", "/remote.txt")
    for chunk in vol.read_file("remote.txt"): ...

Unlike Modal's, every container that mounts a volume sees one filesystem: a write is
visible to the others and to the API at once. `commit()` flushes (sync) and `reload()` has
nothing to fetch; both stay so Modal programs run unchanged. The volumes of one principal
share one quota (SBX_VOLUME_QUOTA_MIB): a write past it gets ENOSPC inside a container and
`StorageFullError` from the API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
from pathlib import Path, PurePosixPath
from typing import IO, Any, AsyncIterator

from ._kv_object import _AsyncKvObject
from ._sync import LOOP, GenMethod, Wrapped, classmethod_both, wrap
from .wire import errors as E

UPLOAD_CHUNK = 1 << 20


class FileEntryType(enum.IntEnum):
    """Type of a file entry listed from a volume (Modal's values)."""

    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5


_TYPES = {"file": FileEntryType.FILE, "directory": FileEntryType.DIRECTORY,
          "symlink": FileEntryType.SYMLINK, "other": FileEntryType.UNSPECIFIED}


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """A file or directory of a volume: `path` is relative to the volume's root."""

    path: str
    type: FileEntryType
    mtime: int
    size: int


def _in_container() -> bool:
    from . import _client
    return bool(_client._CHANNEL)


class _AsyncVolume(_AsyncKvObject):
    _kinds, _what = "volumes", "Volume"
    _read_only = False

    def read_only(self) -> Any:
        """This volume, mounted read-only where it is passed to `volumes=`."""
        view = _AsyncVolume(self._name, object_id=self._object_id,
                            create_if_missing=self._create, client=self._client_override)
        view._read_only = True
        return wrap(view)

    async def hydrate(self, client: Any = None) -> Any:
        """Resolve the name now (Modal's `hydrate`): NotFoundError if it does not exist."""
        await self._id()
        return wrap(self)

    async def commit(self) -> None:
        """Flush this container's writes to disk. Writes are visible to other containers
        at once here (one shared filesystem), so there is nothing else to do."""
        await self._id()
        if _in_container():
            await asyncio.to_thread(os.sync)

    async def reload(self) -> None:
        """Nothing to fetch: every container sees the volume's current files."""
        await self._id()

    async def iterdir(self, path: str = "/", *, recursive: bool = True
                      ) -> AsyncIterator[FileEntry]:
        """Entries below `path` (all levels with `recursive`); a file's path gives that
        file alone."""
        for entry in await self.listdir(path, recursive=recursive):
            yield entry

    async def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        data = await self._call("GET", "files", params={"path": path,
                                                         "recursive": str(recursive).lower()})
        if data.get("truncated"):
            import warnings

            warnings.warn(f"the listing of {path!r} stopped at {len(data['entries'])} entries: "
                          "list its subdirectories one by one", stacklevel=3)
        return [FileEntry(path=e["path"], type=_TYPES.get(e["type"], FileEntryType.UNSPECIFIED),
                          mtime=int(e["mtime"]), size=e["size"]) for e in data["entries"]]

    async def read_file(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes in chunks (FileNotFoundError if it is not there)."""
        oid = await self._id()
        async for chunk in self._client.stream("GET", f"/v1/volumes/{oid}/file",
                                               params={"path": path}):
            yield chunk

    async def read_file_into_fileobj(self, path: str, fileobj: IO[bytes]) -> int:
        """Write the file into `fileobj`; returns the number of bytes."""
        n = 0
        async for chunk in self.read_file(path):
            await asyncio.to_thread(fileobj.write, chunk)
            n += len(chunk)
        return n

    async def remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a directory (with everything in it, given `recursive`)."""
        await self._call("DELETE", "file", params={"path": path,
                                                   "recursive": str(recursive).lower()})

    async def copy_files(self, src_paths: list[str], dst_path: str,
                         recursive: bool = False) -> None:
        """Copy inside the volume with `cp`'s rules (into `dst_path` if it is a directory)."""
        if isinstance(src_paths, (str, bytes)):
            raise E.InvalidRequestError("copy_files takes a list of source paths: "
                                        f"copy_files([{src_paths!r}], ...)")
        await self._call("POST", "copy", {"src_paths": [str(p) for p in src_paths],
                                          "dst_path": str(dst_path), "recursive": recursive})

    async def batch_upload(self, force: bool = False) -> "BatchUpload":
        """`with vol.batch_upload() as batch: batch.put_file(...)`: the files are uploaded
        when the block ends; an existing file is FileExistsError unless `force=True`."""
        return BatchUpload(self, force)

    async def _put(self, source: Any, remote: str, force: bool, mode: int | None) -> None:
        oid = await self._id()

        async def body() -> AsyncIterator[bytes]:
            f = open(source, "rb") if isinstance(source, (str, Path)) else source
            try:
                while chunk := await asyncio.to_thread(f.read, UPLOAD_CHUNK):
                    yield chunk
            finally:
                if f is not source:
                    f.close()
        params: dict[str, Any] = {"path": remote, "force": str(force).lower()}
        if mode is not None:
            params["mode"] = mode
        try:
            await self._client.request("PUT", f"/v1/volumes/{oid}/file", params=params,
                                       content=body(), timeout=3600)
        except E.ConflictError as e:
            raise FileExistsError(str(e)) from None


class BatchUpload:
    """Files to upload to a volume; sent when the `with` (or `async with`) block ends."""

    def __init__(self, volume: _AsyncVolume, force: bool):
        self._volume, self._force = volume, force
        self._files: list[tuple[Any, str, int | None]] = []

    def put_file(self, local_file: str | Path | IO[bytes], remote_path: str | PurePosixPath,
                 mode: int | None = None) -> None:
        """A local path or a binary file object, to `remote_path` (parents are made)."""
        remote = PurePosixPath(remote_path).as_posix()
        if str(remote_path).endswith("/"):
            raise ValueError(f"remote_path ({remote_path}) must refer to a file - cannot end "
                             "with /")
        if mode is None and isinstance(local_file, (str, Path)):
            mode = os.stat(local_file).st_mode & 0o777
        self._files.append((local_file, remote, mode))

    def put_directory(self, local_path: str | Path, remote_path: str | PurePosixPath,
                      recursive: bool = True) -> None:
        """Every regular file below `local_path`, at the same relative paths."""
        local = Path(local_path)
        if not local.is_dir():
            raise NotADirectoryError(f"{local_path} is not a local directory")
        remote = PurePosixPath(remote_path)
        for sub in sorted(local.rglob("*") if recursive else local.glob("*")):
            if sub.is_file():
                self.put_file(sub, remote / sub.relative_to(local).as_posix())

    async def _send(self) -> None:
        if not self._force:  # refuse the whole batch before uploading anything (Modal's rule)
            await self._refuse_existing()
        for local, remote, mode in self._files:
            await self._volume._put(local, remote, self._force, mode)

    async def _refuse_existing(self) -> None:
        from .wire import volume_path_parts

        def norm(path: str) -> str:
            return "/".join(volume_path_parts(path))
        existing: set[str] = set()
        for parent in sorted({"/".join(volume_path_parts(r)[:-1]) for _, r, _ in self._files}):
            try:
                existing |= {norm(e.path) for e in await self._volume.listdir(parent or "/")}
            except (E.NotFoundError, E.SandboxFileError):
                pass  # no such directory yet (or a file: the upload says so)
        clash = [r for _, r, _ in self._files if norm(r) in existing]
        if clash:
            more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
            raise FileExistsError(f"{clash[0]!r}{more} already exist in the volume: nothing "
                                  "was uploaded; pass force=True to overwrite")

    def __enter__(self) -> "BatchUpload":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            LOOP.run(self._send())

    async def __aenter__(self) -> "BatchUpload":
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            await LOOP.run_async(self._send())


class Volume(Wrapped, impl=_AsyncVolume):
    """A persistent directory tree: `Volume.from_name(name, create_if_missing=True)`, or
    `with Volume.ephemeral() as vol:`; mounted with `volumes={"/data": vol}`. Methods have
    `.aio` twins."""

    from_name = staticmethod(_AsyncVolume.from_name)
    ephemeral = staticmethod(_AsyncVolume.ephemeral)
    delete = classmethod_both("delete")
    iterdir = GenMethod("iterdir")
    read_file = GenMethod("read_file")

    def read_only(self) -> "Volume":
        return self._impl.read_only()


async def mounts_of(volumes: Any, where: str) -> list[dict[str, Any]]:
    """`volumes={"/data": vol}` as wire mounts, resolving each volume's id (a name with
    create_if_missing=True is made here)."""
    if not volumes:
        return []
    if not isinstance(volumes, dict):
        raise E.InvalidRequestError(f"{where}: volumes= takes a dict of mount path to "
                                    "Volume, e.g. volumes={'/data': vol}")
    out = []
    for path, vol in volumes.items():
        impl = getattr(vol, "_impl", vol)
        if not isinstance(impl, _AsyncVolume):
            raise E.InvalidRequestError(
                f"{where}: volumes[{path!r}] is a {type(vol).__name__}; only Volume is "
                "supported here (CloudBucketMount and NetworkFileSystem are not available in "
                "sandbox-service: use a Volume)")
        out.append({"volume_id": await impl._id(), "path": str(path),
                    "read_only": impl._read_only})
    return out
