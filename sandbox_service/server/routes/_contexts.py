"""REST routes of the stateful code interpreter: contexts of a sandbox and cells run in them
(server layer). See `wire/_contexts.py` for the routes and the NDJSON events of a run.

Handlers translate HTTP to ContextService calls and nothing more; auth (including
sandbox-scoped tokens) is the app's middleware. The audit log records a run's context and
the size of its code, never the code.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...wire import CodeRunRequest, ContextCreate, ContextInfo, ContextList
from ..services import ContextService
from ._streaming import OwnedStreamingResponse

contexts_router = APIRouter()
_BASE = "/v1/sandboxes/{sandbox_id}/contexts"


def _svc(request: Request) -> ContextService:
    return ContextService(request.app.state.manager)


@contexts_router.post(_BASE, response_model=ContextInfo, status_code=201)
async def create_context(sandbox_id: str, body: ContextCreate, request: Request) -> ContextInfo:
    info = await _svc(request).create(sandbox_id, body)
    request.state.audit_detail = {"context_id": info.context_id}
    return info


@contexts_router.get(_BASE, response_model=ContextList)
async def list_contexts(sandbox_id: str, request: Request) -> ContextList:
    return ContextList(contexts=await _svc(request).list(sandbox_id))


@contexts_router.get(_BASE + "/{context_id}", response_model=ContextInfo)
async def get_context(sandbox_id: str, context_id: str, request: Request) -> ContextInfo:
    return await _svc(request).get(sandbox_id, context_id)


@contexts_router.delete(_BASE + "/{context_id}")
async def delete_context(sandbox_id: str, context_id: str, request: Request) -> dict:
    request.state.audit_detail = {"context_id": context_id}
    await _svc(request).delete(sandbox_id, context_id)
    return {"context_id": context_id, "deleted": True}


@contexts_router.post(_BASE + "/{context_id}/interrupt")
async def interrupt_context(sandbox_id: str, context_id: str, request: Request) -> dict:
    request.state.audit_detail = {"context_id": context_id}
    return {"context_id": context_id,
            "interrupted": await _svc(request).interrupt(sandbox_id, context_id)}


@contexts_router.post(_BASE + "/{context_id}/run")
async def run_code(sandbox_id: str, context_id: str, body: CodeRunRequest,
                   request: Request) -> OwnedStreamingResponse:
    request.state.audit_detail = {"context_id": context_id,
                                  "code_bytes": len(body.code.encode("utf-8", "surrogatepass")),
                                  "timeout_s": body.timeout_s}
    lines, cleanup = await _svc(request).run(sandbox_id, context_id, body)
    return OwnedStreamingResponse(lines, media_type="application/x-ndjson", cleanup=cleanup)
