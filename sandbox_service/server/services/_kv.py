"""Dicts and Queues (server layer): Modal's `modal.Dict` and `modal.Queue`, per principal,
behind the store interface.

- Named objects live in one namespace per principal and kind; `ephemeral` ones have no
  name, live while their client's context does (it heartbeats), and are swept
  `EPHEMERAL_IDLE_S` after the last sign of it.
- Keys and values are opaque bytes (the SDK's cloudpickle); nothing here unpickles them.
- Limits (wire/_kv.py) give typed errors: a value too large is a 413, a full partition or
  too many objects a 429 the SDK turns into `queue.Full`.
- A blocking `get` waits on the queue's condition (woken by each put) for at most
  `MAX_QUEUE_WAIT_S`; the SDK repeats it for longer timeouts. Nothing is lost on a server
  restart: items are in the store, and only waiting requests end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable

from security import Principal

from ...wire import (
    MAX_DICT_ENTRIES,
    MAX_OBJECTS_PER_OWNER,
    MAX_PARTITION_ITEMS,
    MAX_QUEUE_PARTITIONS,
    Count,
    DictEntries,
    DictItem,
    DictPut,
    DictPutResult,
    DictValue,
    KvInfo,
    KvList,
    QueueClear,
    QueueGet,
    QueueItems,
    QueueNext,
    QueuePut,
    QueueValues,
    new_id,
)
from ...wire import errors as E

log = logging.getLogger("sbx.kv")

EPHEMERAL_IDLE_S = 600.0
SWEEP_S = 60.0
PAGE = 1000
_ID_PREFIX = {"dict": "dict", "queue": "queue", "volume": "volume"}
_NAMES = {"dict": "Dict", "queue": "Queue", "volume": "Volume"}


def _dec(value: str) -> bytes:
    return base64.b64decode(value)


def _enc(value: bytes) -> str:
    return base64.b64encode(value).decode()


class KvService:
    def __init__(self, store: Any):
        self.store = store
        # per queue: an event set (and replaced) by each put, which waiting gets watch
        self._puts: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task | None = None
        self.stopping = False
        # kind -> what else a delete removes (a volume's files: VolumeService)
        self.on_delete: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}

    def wake_all(self) -> None:
        """The server stops: every waiting get answers with what it has (nothing)."""
        self.stopping = True
        for queue_id in list(self._puts):
            self._signal(queue_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # ---- objects --------------------------------------------------------------------
    async def lookup(self, who: Principal, kind: str, name: str, create: bool) -> KvInfo:
        rec = await self.store.kv_by_name(kind, who.name, name)
        if rec is None:
            if not create:
                raise E.NotFoundError(f"no {_NAMES[kind]} named {name!r}: pass "
                                      "create_if_missing=True, or `sbx "
                                      f"{kind} create {name}`")
            if await self.store.kv_count(kind, who.name) >= MAX_OBJECTS_PER_OWNER:
                raise E.QuotaExceededError(
                    f"this principal has {MAX_OBJECTS_PER_OWNER} named {_NAMES[kind]}s, the "
                    "limit: delete some (`sbx " f"{kind} rm NAME`)")
            rec = await self.store.kv_create({"id": new_id(_ID_PREFIX[kind]), "kind": kind,
                                              "owner": who.name, "name": name,
                                              "created_at": time.time()})
        return _info(rec)

    async def ephemeral(self, who: Principal, kind: str) -> KvInfo:
        rec = await self.store.kv_create({"id": new_id(_ID_PREFIX[kind]), "kind": kind,
                                          "owner": who.name, "name": None, "ephemeral": True,
                                          "created_at": time.time()})
        return _info(rec)

    async def get(self, who: Principal, kind: str, object_id: str) -> dict[str, Any]:
        rec = await self.store.kv_get(object_id)
        if rec is None or rec["kind"] != kind or not (who.is_admin or rec["owner"] == who.name):
            raise E.NotFoundError(f"no {_NAMES[kind]} {object_id!r} (deleted, or an ephemeral "
                                  "one whose context ended)")
        return rec

    async def heartbeat(self, who: Principal, kind: str, object_id: str) -> None:
        await self.get(who, kind, object_id)
        await self.store.kv_touch(object_id)

    async def list(self, who: Principal, kind: str) -> KvList:
        recs = await self.store.kv_list(kind, None if who.is_admin else who.name)
        return KvList(objects=[_info(r) for r in recs])

    async def delete(self, who: Principal, kind: str, object_id: str) -> None:
        rec = await self.get(who, kind, object_id)
        await self.store.kv_delete(object_id)
        if kind in self.on_delete:
            await self.on_delete[kind](rec)
        self._signal(object_id)
        self._puts.pop(object_id, None)

    async def delete_by_name(self, who: Principal, kind: str, name: str) -> None:
        rec = await self.store.kv_by_name(kind, who.name, name)
        if rec is None:
            raise E.NotFoundError(f"no {_NAMES[kind]} named {name!r}")
        await self.delete(who, kind, rec["id"])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                for object_id in await self.store.kv_stale_ephemeral(
                        time.time() - EPHEMERAL_IDLE_S):
                    log.info("ephemeral %s: its context is gone; deleted", object_id)
                    rec = await self.store.kv_get(object_id)
                    await self.store.kv_delete(object_id)
                    if rec is not None and rec["kind"] in self.on_delete:
                        await self.on_delete[rec["kind"]](rec)
                    self._puts.pop(object_id, None)
            except Exception:
                log.exception("sweeping ephemeral Dicts, Queues and Volumes")

    # ---- Dicts ----------------------------------------------------------------------
    async def dict_get(self, who: Principal, dict_id: str, key_b64: str,
                       pop: bool = False) -> DictValue:
        await self.get(who, "dict", dict_id)
        op = self.store.dict_pop if pop else self.store.dict_get
        value = await op(dict_id, _dec(key_b64))
        return DictValue(found=value is not None,
                         value_b64=_enc(value) if value is not None else None)

    async def dict_put(self, who: Principal, dict_id: str, body: DictPut) -> DictPutResult:
        await self.get(who, "dict", dict_id)
        ok = await self.store.dict_put(
            dict_id, [(_dec(e.key_b64), _dec(e.value_b64)) for e in body.entries],
            body.skip_if_exists, MAX_DICT_ENTRIES)
        if ok is None:
            raise E.QuotaExceededError(f"the Dict would have more than {MAX_DICT_ENTRIES} "
                                       "entries: pop or clear some first")
        return DictPutResult(created=ok)

    async def dict_len(self, who: Principal, dict_id: str) -> Count:
        await self.get(who, "dict", dict_id)
        return Count(len=await self.store.dict_len(dict_id))

    async def dict_page(self, who: Principal, dict_id: str, cursor: int, keys: bool,
                        values: bool) -> DictEntries:
        await self.get(who, "dict", dict_id)
        rows = await self.store.dict_page(dict_id, cursor, PAGE)
        return DictEntries(
            entries=[DictItem(key_b64=_enc(k) if keys else None,
                              value_b64=_enc(v) if values else None) for _, k, v in rows],
            next_cursor=rows[-1][0] if rows else None)  # the last page is an empty one

    async def dict_clear(self, who: Principal, dict_id: str) -> None:
        await self.get(who, "dict", dict_id)
        await self.store.dict_clear(dict_id)

    # ---- Queues ---------------------------------------------------------------------
    def _event(self, queue_id: str) -> asyncio.Event:
        ev = self._puts.get(queue_id)
        if ev is None:
            ev = self._puts[queue_id] = asyncio.Event()
        return ev

    def _signal(self, queue_id: str) -> None:
        ev = self._puts.pop(queue_id, None)
        if ev is not None:
            ev.set()

    async def queue_put(self, who: Principal, queue_id: str, body: QueuePut) -> None:
        await self.get(who, "queue", queue_id)
        why = await self.store.queue_put(queue_id, body.partition,
                                         [_dec(v) for v in body.values_b64],
                                         MAX_PARTITION_ITEMS, MAX_QUEUE_PARTITIONS)
        if why == "full":
            raise E.QuotaExceededError(
                f"the Queue's partition {body.partition or '(default)'!r} is full "
                f"({MAX_PARTITION_ITEMS} items): get some first", details={"full": True})
        if why == "partitions":
            raise E.QuotaExceededError(f"the Queue has {MAX_QUEUE_PARTITIONS} partitions, the "
                                       "limit", details={"full": True})
        self._signal(queue_id)

    async def _wait(self, queue_id: str, deadline: float, ready,
                    gone: asyncio.Future | None = None) -> Any:
        """`ready()` (a take) when it has something, or at the deadline. A caller that went
        away (`gone` done) takes nothing: its items stay for the next get."""
        while True:
            if gone is not None and gone.done():
                return []
            ev = self._event(queue_id)  # before the take: a put after it sets this one
            got = await ready()
            left = deadline - time.monotonic()
            if got or left <= 0 or self.stopping:
                return got
            waiter = asyncio.ensure_future(ev.wait())
            await asyncio.wait({waiter, *([gone] if gone is not None else [])}, timeout=left,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            await self.get_alive(queue_id)

    async def get_alive(self, queue_id: str) -> None:
        if await self.store.kv_get(queue_id) is None:
            raise E.NotFoundError(f"the Queue {queue_id!r} was deleted while this call waited")

    async def queue_get(self, who: Principal, queue_id: str, body: QueueGet,
                        gone=None) -> QueueValues:
        await self.get(who, "queue", queue_id)
        values = await self._wait(
            queue_id, time.monotonic() + body.timeout_s,
            lambda: self.store.queue_take(queue_id, body.partition, body.n_values), gone)
        return QueueValues(values_b64=[_enc(v) for v in values])

    async def queue_next(self, who: Principal, queue_id: str, body: QueueNext) -> QueueItems:
        await self.get(who, "queue", queue_id)
        rows = await self._wait(
            queue_id, time.monotonic() + body.timeout_s,
            lambda: self.store.queue_after(queue_id, body.partition, body.after_seq, PAGE))
        return QueueItems(items=[(seq, _enc(v)) for seq, v in rows])

    async def queue_len(self, who: Principal, queue_id: str, partition: str,
                        total: bool) -> Count:
        await self.get(who, "queue", queue_id)
        return Count(len=await self.store.queue_len(queue_id, None if total else partition))

    async def queue_clear(self, who: Principal, queue_id: str, body: QueueClear) -> None:
        await self.get(who, "queue", queue_id)
        await self.store.queue_clear(queue_id, None if body.all else body.partition)


def _info(rec: dict[str, Any]) -> KvInfo:
    return KvInfo(object_id=rec["id"], kind=rec["kind"], name=rec.get("name"),
                  created_at=rec["created_at"], ephemeral=bool(rec.get("ephemeral")),
                  entries=rec.get("entries"))
