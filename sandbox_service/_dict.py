"""Dict (public layer): Modal's `modal.Dict`, a persistent key-value store per principal on
the server, usable from the client, from functions and next to sandboxes.

    d = modal.Dict.from_name("cache", create_if_missing=True)
    d["model"] = {"rev": 3}; d.put("k", 1, skip_if_exists=True); "k" in d; d.len()

Keys and values travel pickled (cloudpickle); the server compares keys by those bytes, so
use primitive keys (str, int, tuples of them), as Modal advises. Unlike Modal's, entries do
not expire: they stay until popped, cleared or the Dict is deleted. Limits: a key 64 KiB,
a value 16 MiB pickled, 100,000 entries (typed errors past them).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping

from ._kv_object import _AsyncKvObject, dec, enc
from ._sync import LOOP, GenMethod, Wrapped, classmethod_both

_MISSING = object()


class _AsyncDict(_AsyncKvObject):
    _kinds, _what = "dicts", "Dict"

    async def get(self, key: Any, default: Any = None) -> Any:
        """The value of `key`, or `default` if it is not there."""
        data = await self._call("POST", "get", {"key_b64": enc(key)})
        return dec(data["value_b64"]) if data["found"] else default

    async def contains(self, key: Any) -> bool:
        return (await self.get(key, _MISSING)) is not _MISSING

    async def len(self) -> int:
        return (await self._call("GET", "len"))["len"]

    async def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set `key`; with `skip_if_exists=True` an existing key is left as is. Returns
        whether the value was written."""
        data = await self._call("POST", "put", {"entries": [{"key_b64": enc(key),
                                                             "value_b64": enc(value)}],
                                                "skip_if_exists": skip_if_exists})
        return data["created"]

    async def update(self, other: Mapping | None = None, /, **kwargs: Any) -> None:
        """Set many keys at once (as dict.update), in one request."""
        contents = dict(other or {})
        contents.update(kwargs)
        if contents:
            await self._call("POST", "put", {"entries": [
                {"key_b64": enc(k), "value_b64": enc(v)} for k, v in contents.items()]})

    async def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove `key` and return its value; KeyError if it is not there (unless a
        default is given)."""
        data = await self._call("POST", "pop", {"key_b64": enc(key)})
        if data["found"]:
            return dec(data["value_b64"])
        if default is not _MISSING:
            return default
        raise KeyError(key)

    async def clear(self) -> None:
        await self._call("POST", "clear")

    async def _entries(self, keys: bool, values: bool) -> AsyncIterator[Any]:
        cursor = 0
        while True:
            page = await self._call("GET", "entries", params={
                "cursor": cursor, "keys": keys, "values": values})
            for e in page["entries"]:
                if keys and values:
                    yield dec(e["key_b64"]), dec(e["value_b64"])
                else:
                    yield dec(e["key_b64"] if keys else e["value_b64"])
            if page["next_cursor"] is None:
                return
            cursor = page["next_cursor"]

    async def keys(self) -> AsyncIterator[Any]:
        async for k in self._entries(True, False):
            yield k

    async def values(self) -> AsyncIterator[Any]:
        async for v in self._entries(False, True):
            yield v

    async def items(self) -> AsyncIterator[tuple[Any, Any]]:
        async for kv in self._entries(True, True):
            yield kv

    async def _getitem(self, key: Any) -> Any:
        value = await self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    async def __getitem__(self, key: Any) -> Any:
        return await self._getitem(key)

    async def __setitem__(self, key: Any, value: Any) -> None:
        await self.put(key, value)

    async def __delitem__(self, key: Any) -> None:
        await self.pop(key)

    async def __contains__(self, key: Any) -> bool:
        return await self.contains(key)


class Dict(Wrapped, impl=_AsyncDict):
    """A persistent, named key-value store: `Dict.from_name(name, create_if_missing=True)`,
    or `with Dict.ephemeral() as d:`. Methods have `.aio` twins."""

    from_name = staticmethod(_AsyncDict.from_name)
    ephemeral = staticmethod(_AsyncDict.ephemeral)
    delete = classmethod_both("delete")
    keys = GenMethod("keys")
    values = GenMethod("values")
    items = GenMethod("items")

    def __getitem__(self, key: Any) -> Any:
        return LOOP.run(self._impl._getitem(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        LOOP.run(self._impl.put(key, value))

    def __delitem__(self, key: Any) -> None:
        LOOP.run(self._impl.pop(key))

    def __contains__(self, key: Any) -> bool:
        return LOOP.run(self._impl.contains(key))

    def __iter__(self):
        return iter(self.keys())
