"""`sb.filesystem`: files inside a sandbox (public layer, async implementation + wrapper).

Paths are resolved by the agent inside the sandbox, never on the host, so `..` and
symlinks can only ever reach the sandbox's own filesystem.
"""

from __future__ import annotations

import os
from typing import AsyncIterator

from ._client import _Client
from ._sync import Wrapped
from .wire import FileEntry
from .wire import errors as E

CHUNK = 1024 * 1024


def _remote(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise E.InvalidRequestError(f"sandbox paths must be absolute, got {path!r}: "
                                    "e.g. '/tmp/data.txt'")
    return path


class _AsyncFilesystem:
    def __init__(self, client: _Client, sandbox_id: str):
        self._client = client
        self._base = f"/v1/sandboxes/{sandbox_id}/files"

    async def read_bytes(self, path: str) -> bytes:
        out = bytearray()
        async for chunk in self._client.stream("GET", self._base, params={"path": _remote(path)}):
            out += chunk
        return bytes(out)

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read_bytes(path)).decode(encoding, errors="replace")

    async def write_bytes(self, data: bytes, path: str, *, mode: int | None = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise E.InvalidRequestError("write_bytes takes bytes; use write_text for str")
        params = {"path": _remote(path)}
        if mode is not None:
            params["mode"] = str(mode)
        await self._client.request("PUT", self._base, params=params, content=bytes(data))

    async def write_text(self, data: str, path: str, encoding: str = "utf-8") -> None:
        if not isinstance(data, str):
            raise E.InvalidRequestError("write_text takes str; use write_bytes for bytes")
        await self.write_bytes(data.encode(encoding), path)

    async def list_files(self, path: str = "/") -> list[FileEntry]:
        data = await self._client.request("GET", self._base + "/list", params={"path": _remote(path)})
        return [FileEntry(**e) for e in data["entries"]]

    async def stat(self, path: str) -> FileEntry:
        return FileEntry(**await self._client.request("GET", self._base + "/stat",
                                                      params={"path": _remote(path)}))

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
            return True
        except E.NotFoundError:
            return False

    async def make_directory(self, path: str, parents: bool = True) -> None:
        await self._client.request("POST", self._base + "/mkdir",
                                   json_body={"path": _remote(path), "parents": parents})

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self._client.request("DELETE", self._base,
                                   params={"path": _remote(path), "recursive": str(recursive).lower()})

    async def copy_from_local(self, local_path: str | os.PathLike, remote_path: str) -> None:
        """Upload a local file (streamed, any size up to the server's limit)."""
        local = os.fspath(local_path)
        if not os.path.isfile(local):
            raise E.InvalidRequestError(f"{local} is not a local file")

        async def body() -> AsyncIterator[bytes]:
            with open(local, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        await self._client.request("PUT", self._base, params={"path": _remote(remote_path)},
                                   content=body())

    async def copy_to_local(self, remote_path: str, local_path: str | os.PathLike) -> None:
        """Download a file; written to a temporary name and renamed, so a failed copy never
        leaves a truncated file behind."""
        local = os.fspath(local_path)
        tmp = f"{local}.sbx-partial"
        try:
            with open(tmp, "wb") as f:
                async for chunk in self._client.stream("GET", self._base,
                                                       params={"path": _remote(remote_path)}):
                    f.write(chunk)
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class Filesystem(Wrapped, impl=_AsyncFilesystem):
    """Files in a sandbox: read_text/bytes, write_text/bytes(data, path), list_files,
    make_directory, remove, stat, exists, copy_from_local, copy_to_local."""


class _AsyncSandboxFile:
    """Modal's `sb.open(path, mode)`: whole-file semantics. Reads fetch the file on first
    read; writes are buffered and uploaded atomically on flush()/close()."""

    def __init__(self, fs: _AsyncFilesystem, path: str, mode: str):
        if mode not in ("r", "rb", "w", "wb", "a", "ab", "r+", "rb+", "r+b"):
            raise E.InvalidRequestError(f"unsupported mode {mode!r}: use r, rb, w, wb, a or ab")
        self._fs, self.path, self.mode = fs, _remote(path), mode
        self._binary = "b" in mode
        self._data: bytearray | None = None
        self._pos = 0
        self._dirty = False
        self.closed = False

    async def _load(self) -> None:
        if self._data is None:
            if self.mode.startswith("w"):
                self._data = bytearray()
                self._dirty = True
            elif self.mode.startswith("a"):
                try:
                    self._data = bytearray(await self._fs.read_bytes(self.path))
                except E.NotFoundError:
                    self._data = bytearray()
                self._pos = len(self._data)
                self._dirty = True
            else:
                self._data = bytearray(await self._fs.read_bytes(self.path))

    def _check(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    async def read(self, n: int = -1):
        self._check()
        if self.mode[0] in "wa":
            raise E.InvalidRequestError(f"file opened with mode {self.mode!r} is not readable")
        await self._load()
        assert self._data is not None
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        chunk = bytes(self._data[self._pos:end])
        self._pos = end
        return chunk if self._binary else chunk.decode(errors="replace")

    async def write(self, data) -> int:
        self._check()
        if self.mode in ("r", "rb"):
            raise E.InvalidRequestError("file opened for reading: use mode 'w' or 'a' to write")
        raw = data if isinstance(data, (bytes, bytearray)) else str(data).encode()
        await self._load()
        assert self._data is not None
        self._data[self._pos:self._pos + len(raw)] = raw
        self._pos += len(raw)
        self._dirty = True
        return len(data)

    async def seek(self, offset: int, whence: int = 0) -> int:
        self._check()
        await self._load()
        assert self._data is not None
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    async def flush(self) -> None:
        self._check()
        if self._dirty and self._data is not None:
            await self._fs.write_bytes(bytes(self._data), self.path)
            self._dirty = False

    async def close(self) -> None:
        if not self.closed:
            await self.flush()
            self.closed = True


class SandboxFile(Wrapped, impl=_AsyncSandboxFile):
    """A file in a sandbox from `sb.open(path, mode)`; use as a context manager."""

    def __enter__(self) -> "SandboxFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "SandboxFile":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close.aio()
