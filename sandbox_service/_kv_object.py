"""What `Dict` and `Queue` share (public layer, async implementation): lazy lookup by name,
ephemeral objects that live while their context does, delete, and the pickled bytes.

`Dict.from_name("x")` does no I/O (Modal 1.0): the name is resolved on first use, and an
unknown name without `create_if_missing=True` raises NotFoundError then. `ephemeral()`
makes an unnamed object, heartbeats it every `HEARTBEAT_S` while the `with` block runs,
and deletes it at the end (the server sweeps one whose client vanished).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from typing import Any

from . import _serialization as S
from ._client import _Client, default_client
from ._sync import LOOP, wrap
from .wire import errors as E

HEARTBEAT_S = 60.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def enc(obj: Any) -> str:
    return base64.b64encode(S.dumps(obj)).decode()


def dec(text: str) -> Any:
    return S.loads(base64.b64decode(text))


class _AsyncKvObject:
    _kinds = ""          # "dicts" / "queues": the API's collection
    _what = ""           # "Dict" / "Queue": in messages

    def __init__(self, name: str | None = None, *, object_id: str | None = None,
                 create_if_missing: bool = False, client: _Client | None = None):
        self._name = name
        self._object_id = object_id
        self._create = create_if_missing
        self._client_override = client
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_name(cls, name: str, *, environment_name: str | None = None,
                  create_if_missing: bool = False, client: _Client | None = None,
                  **_: Any) -> Any:
        if not isinstance(name, str) or not _NAME.match(name):
            raise E.InvalidRequestError(f"{cls._what} name {name!r} is not valid: 1-128 of "
                                        "[A-Za-z0-9._-], starting with a letter or digit")
        return wrap(cls(name, create_if_missing=create_if_missing, client=client))

    @classmethod
    def ephemeral(cls, client: _Client | None = None, environment_name: str | None = None,
                  **_: Any) -> "_Ephemeral":
        return _Ephemeral(cls, client)

    @classmethod
    async def delete(cls, name: str, *, allow_missing: bool = False,
                     client: _Client | None = None, **_: Any) -> None:
        """Delete the named object and everything in it."""
        obj = cls(name, client=client)
        try:
            await obj._id()
        except E.NotFoundError:
            if allow_missing:
                return
            raise
        await obj._client.request("DELETE", f"/v1/{cls._kinds}/{obj._object_id}")

    @property
    def _client(self) -> _Client:
        return self._client_override or default_client()

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def object_id(self) -> str:
        if self._object_id is None:
            raise E.InvalidRequestError(f"this {self._what} has no id until it is used once")
        return self._object_id

    async def _id(self) -> str:
        if self._object_id is None:
            data = await self._client.request(
                "POST", f"/v1/{self._kinds}/lookup",
                json_body={"name": self._name, "create_if_missing": self._create})
            self._object_id = data["object_id"]
        return self._object_id

    async def _call(self, method: str, op: str, body: Any = None,
                    params: Any = None, timeout: float | None = None) -> Any:
        oid = await self._id()
        kw: dict[str, Any] = {"json_body": body, "params": params}
        if timeout is not None:
            kw["timeout"] = timeout
        return await self._client.request(method, f"/v1/{self._kinds}/{oid}/{op}", **kw)

    def __repr__(self) -> str:
        return f"{self._what}({self._name or self._object_id or 'ephemeral'!r})"


class _Ephemeral:
    """`with X.ephemeral() as x:` and `async with X.ephemeral() as x:`."""

    def __init__(self, cls: type, client: _Client | None):
        self._cls, self._client = cls, client
        self._obj: Any = None
        self._beat: asyncio.Task | None = None

    async def _open(self) -> Any:
        client = self._client or default_client()
        data = await client.request("POST", f"/v1/{self._cls._kinds}/ephemeral")
        self._obj = self._cls(None, object_id=data["object_id"], client=self._client)
        self._beat = asyncio.ensure_future(self._heartbeat(client, data["object_id"]))
        return self._obj

    async def _heartbeat(self, client: _Client, oid: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(E.SandboxError):
                await client.request("POST", f"/v1/{self._cls._kinds}/{oid}/heartbeat")

    async def _close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        if self._obj is not None:
            with contextlib.suppress(E.NotFoundError):
                await self._obj._client.request(
                    "DELETE", f"/v1/{self._cls._kinds}/{self._obj._object_id}")

    def __enter__(self) -> Any:
        return wrap(LOOP.run(self._open()))

    def __exit__(self, *exc: Any) -> None:
        LOOP.run(self._close())

    async def __aenter__(self) -> Any:
        return wrap(await LOOP.run_async(self._open()))

    async def __aexit__(self, *exc: Any) -> None:
        await LOOP.run_async(self._close())
