"""`sb.filesystem`: files inside a sandbox (public layer, async implementation + wrapper).

Paths are resolved by the agent inside the sandbox, never on the host, so `..` and
symlinks can only ever reach the sandbox's own filesystem.
"""

from __future__ import annotations

import os
from typing import AsyncIterator

from . import _errors as E
from ._client import _Client
from ._sync import Wrapped
from ._wire import FileEntry

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
