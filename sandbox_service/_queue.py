"""Queue (public layer): Modal's `modal.Queue`, a persistent FIFO per principal on the
server, with named partitions, usable from the client, from functions and next to
sandboxes.

    q = modal.Queue.from_name("jobs", create_if_missing=True)
    q.put({"url": u}); q.put_many([1, 2], partition="p"); q.get(timeout=5); q.len()

`get` blocks until an item comes (or `timeout`, then the stdlib's `queue.Empty`);
`block=False` returns None at once when empty. `put` on a full partition (5,000 items)
raises `queue.Full` (after retrying until `timeout` when blocking). Items are pickled, at
most 1 MiB each. Unlike Modal's, partitions do not expire (`partition_ttl` is accepted and
ignored): items stay until taken or cleared.
"""

from __future__ import annotations

import asyncio
import queue as _stdqueue
import time
import warnings
from typing import Any, AsyncIterator

from ._kv_object import _AsyncKvObject, dec, enc
from ._sync import GenMethod, Wrapped, classmethod_both
from .wire import errors as E

MAX_WAIT_S = 50.0      # the server's bound for one blocking get (wire.MAX_QUEUE_WAIT_S)
FULL_RETRY_S = 0.5


def _partition(partition: str | None) -> str:
    if partition is not None and (not isinstance(partition, str) or not partition):
        raise E.InvalidRequestError("partition must be a non-empty string, or None for the "
                                    "default partition")
    return partition or ""


class _AsyncQueue(_AsyncKvObject):
    _kinds, _what = "queues", "Queue"

    async def put(self, v: Any, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        """Add `v` at the end of the partition."""
        await self.put_many([v], block, timeout, partition=partition)

    async def put_many(self, vs: list[Any], block: bool = True, timeout: float | None = None,
                       *, partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        """Add the values at the end of the partition, all or none."""
        if not block and timeout is not None:
            warnings.warn("timeout is ignored for a non-blocking put", stacklevel=2)
        vs = list(vs)
        if not vs:
            return
        body = {"values_b64": [enc(v) for v in vs], "partition": _partition(partition)}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                await self._call("POST", "put", body)
                return
            except E.QuotaExceededError as e:
                if not (e.details or {}).get("full"):
                    raise
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise _stdqueue.Full(str(e)) from None
                await asyncio.sleep(FULL_RETRY_S)

    async def _get(self, n: int, block: bool, timeout: float | None,
                   partition: str | None) -> list[Any]:
        if not block and timeout is not None:
            warnings.warn("timeout is ignored for a non-blocking get", stacklevel=3)
        part = _partition(partition)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.0
            if block:
                left = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
                wait = max(0.0, min(MAX_WAIT_S, left))
            data = await self._call("POST", "get", {"partition": part, "n_values": n,
                                                    "timeout_s": wait})
            if data["values_b64"]:
                return [dec(v) for v in data["values_b64"]]
            if not block:
                return []
            if deadline is not None and time.monotonic() >= deadline:
                raise _stdqueue.Empty()

    async def get(self, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None) -> Any:
        """Remove and return the oldest item; blocks until one comes (or `timeout`, then
        `queue.Empty`); `block=False`: None at once when empty."""
        values = await self._get(1, block, timeout, partition)
        return values[0] if values else None

    async def get_many(self, n_values: int, block: bool = True, timeout: float | None = None,
                       *, partition: str | None = None) -> list[Any]:
        """Remove and return up to `n_values` items (at least one when blocking)."""
        return await self._get(n_values, block, timeout, partition)

    async def len(self, *, partition: str | None = None, total: bool = False) -> int:
        if partition and total:
            raise E.InvalidRequestError("pass partition= or total=True, not both")
        data = await self._call("GET", "len", params={"partition": _partition(partition),
                                                      "total": total})
        return data["len"]

    async def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        if partition and all:
            raise E.InvalidRequestError("pass partition= or all=True, not both")
        await self._call("POST", "clear", {"partition": _partition(partition), "all": all})

    async def iterate(self, *, partition: str | None = None,
                      item_poll_timeout: float = 0.0) -> AsyncIterator[Any]:
        """The partition's items, oldest first, without removing them; waits up to
        `item_poll_timeout` seconds for each next item before it ends."""
        part, after = _partition(partition), 0
        while True:
            data = await self._call("POST", "next", {
                "partition": part, "after_seq": after,
                "timeout_s": max(0.0, min(MAX_WAIT_S, item_poll_timeout))})
            if not data["items"]:
                return
            for seq, value in data["items"]:
                yield dec(value)
                after = seq


class Queue(Wrapped, impl=_AsyncQueue):
    """A persistent FIFO with partitions: `Queue.from_name(name, create_if_missing=True)`,
    or `with Queue.ephemeral() as q:`. Methods have `.aio` twins."""

    from_name = staticmethod(_AsyncQueue.from_name)
    ephemeral = staticmethod(_AsyncQueue.ephemeral)
    delete = classmethod_both("delete")
    iterate = GenMethod("iterate")
