"""REST routes of Dicts and Queues (server layer). Thin: each parses a wire model and calls
`KvService` (services/_kv.py). `{kind}` is `dicts`, `queues` or `volumes` for what they
share: lookup by name, ephemeral objects, list, heartbeat, delete.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request, Response

from ...wire import (
    Count,
    DictEntries,
    DictKey,
    DictPut,
    DictPutResult,
    DictValue,
    KvInfo,
    KvList,
    KvLookup,
    QueueClear,
    QueueGet,
    QueueItems,
    QueueNext,
    QueuePut,
    QueueValues,
)
from ..services import KvService

kv_router = APIRouter()


def _svc(request: Request) -> KvService:
    return request.app.state.kv


def _who(request: Request):
    return request.state.principal


def _shared(kinds: str) -> None:
    """The routes Dicts and Queues share, at /v1/dicts/... and /v1/queues/..."""
    kind = kinds[:-1]

    @kv_router.post(f"/v1/{kinds}/lookup", response_model=KvInfo, name=f"{kind}_lookup")
    async def lookup(body: KvLookup, request: Request) -> KvInfo:
        request.state.audit_detail = {"name": body.name, "create": body.create_if_missing}
        return await _svc(request).lookup(_who(request), kind, body.name,
                                          body.create_if_missing)

    @kv_router.post(f"/v1/{kinds}/ephemeral", response_model=KvInfo, status_code=201,
                    name=f"{kind}_ephemeral")
    async def ephemeral(request: Request) -> KvInfo:
        return await _svc(request).ephemeral(_who(request), kind)

    @kv_router.get(f"/v1/{kinds}", response_model=KvList, name=f"{kind}_list")
    async def list_(request: Request) -> KvList:
        return await _svc(request).list(_who(request), kind)

    @kv_router.post(f"/v1/{kinds}/{{object_id}}/heartbeat", status_code=204,
                    name=f"{kind}_heartbeat")
    async def heartbeat(object_id: str, request: Request) -> Response:
        await _svc(request).heartbeat(_who(request), kind, object_id)
        return Response(status_code=204)

    @kv_router.delete(f"/v1/{kinds}/{{object_id}}", status_code=204, name=f"{kind}_delete")
    async def delete(object_id: str, request: Request) -> Response:
        await _svc(request).delete(_who(request), kind, object_id)
        return Response(status_code=204)


_shared("dicts")
_shared("queues")
_shared("volumes")  # their files: routes/_volumes.py


# ---- Dicts ---------------------------------------------------------------------------
@kv_router.post("/v1/dicts/{dict_id}/get", response_model=DictValue)
async def dict_get(dict_id: str, body: DictKey, request: Request) -> DictValue:
    return await _svc(request).dict_get(_who(request), dict_id, body.key_b64)


@kv_router.post("/v1/dicts/{dict_id}/pop", response_model=DictValue)
async def dict_pop(dict_id: str, body: DictKey, request: Request) -> DictValue:
    return await _svc(request).dict_get(_who(request), dict_id, body.key_b64, pop=True)


@kv_router.post("/v1/dicts/{dict_id}/put", response_model=DictPutResult)
async def dict_put(dict_id: str, body: DictPut, request: Request) -> DictPutResult:
    return await _svc(request).dict_put(_who(request), dict_id, body)


@kv_router.get("/v1/dicts/{dict_id}/len", response_model=Count)
async def dict_len(dict_id: str, request: Request) -> Count:
    return await _svc(request).dict_len(_who(request), dict_id)


@kv_router.get("/v1/dicts/{dict_id}/entries", response_model=DictEntries)
async def dict_entries(dict_id: str, request: Request, cursor: int = Query(0, ge=0),
                       keys: bool = True, values: bool = True) -> DictEntries:
    return await _svc(request).dict_page(_who(request), dict_id, cursor, keys, values)


@kv_router.post("/v1/dicts/{dict_id}/clear", status_code=204)
async def dict_clear(dict_id: str, request: Request) -> Response:
    await _svc(request).dict_clear(_who(request), dict_id)
    return Response(status_code=204)


# ---- Queues --------------------------------------------------------------------------
@kv_router.post("/v1/queues/{queue_id}/put", status_code=204)
async def queue_put(queue_id: str, body: QueuePut, request: Request) -> Response:
    await _svc(request).queue_put(_who(request), queue_id, body)
    return Response(status_code=204)


@kv_router.post("/v1/queues/{queue_id}/get", response_model=QueueValues)
async def queue_get(queue_id: str, body: QueueGet, request: Request) -> QueueValues:
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        return await _svc(request).queue_get(_who(request), queue_id, body, gone=gone)
    finally:
        gone.cancel()


async def _disconnect(request: Request) -> None:
    """Returns when the client goes away (the body is read: only http.disconnect comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@kv_router.post("/v1/queues/{queue_id}/next", response_model=QueueItems)
async def queue_next(queue_id: str, body: QueueNext, request: Request) -> QueueItems:
    return await _svc(request).queue_next(_who(request), queue_id, body)


@kv_router.get("/v1/queues/{queue_id}/len", response_model=Count)
async def queue_len(queue_id: str, request: Request,
                    partition: str = Query("", max_length=64), total: bool = False) -> Count:
    return await _svc(request).queue_len(_who(request), queue_id, partition, total)


@kv_router.post("/v1/queues/{queue_id}/clear", status_code=204)
async def queue_clear(queue_id: str, body: QueueClear, request: Request) -> Response:
    await _svc(request).queue_clear(_who(request), queue_id, body)
    return Response(status_code=204)

