"""REST routes of functions, classes, their calls, apps and function containers (server
layer). Thin: each parses a wire model and calls `FunctionService` (services/_functions.py).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request

from ...wire import (
    AppDeploy,
    AppDeployed,
    AppSummary,
    AppSummaryList,
    CallCreate,
    CallCreated,
    CallInfo,
    CallInputs,
    CallOutputs,
    ContainerSummaryList,
    FunctionInfo,
)
from ..services import FunctionService

functions_router = APIRouter()


def _svc(request: Request) -> FunctionService:
    return request.app.state.functions


def _who(request: Request):
    return request.state.principal


@functions_router.post("/v1/apps/deploy", response_model=AppDeployed)
async def deploy_app(body: AppDeploy, request: Request) -> AppDeployed:
    request.state.audit_detail = {"app": body.name, "mode": body.mode,
                                  "functions": [f.name for f in body.functions]}
    return await _svc(request).deploy(_who(request), body)


@functions_router.get("/v1/apps", response_model=AppSummaryList)
async def list_apps(request: Request) -> AppSummaryList:
    return AppSummaryList(apps=await _svc(request).list_apps(_who(request)))


@functions_router.get("/v1/apps/{app_id}", response_model=AppSummary)
async def get_app(app_id: str, request: Request) -> AppSummary:
    svc = _svc(request)
    return svc.summary(await svc.app_record(_who(request), app_id))


@functions_router.get("/v1/apps/{app_id}/history")
async def app_history(app_id: str, request: Request) -> dict:
    rec = await _svc(request).app_record(_who(request), app_id)
    return {"app_id": rec.app_id, "history": rec.history}


@functions_router.post("/v1/apps/{app_id}/stop", response_model=AppSummary)
async def stop_app(app_id: str, request: Request) -> AppSummary:
    return await _svc(request).stop_app(_who(request), app_id)


@functions_router.get("/v1/apps/{app_id}/logs")
async def app_logs(app_id: str, request: Request, after_seq: int = Query(0, ge=0),
                   timeout_s: float = Query(0, ge=0, le=55)) -> dict:
    svc = _svc(request)
    await svc.app_record(_who(request), app_id)
    if timeout_s:
        await svc._until_stopping(svc.logs.wait(app_id, after_seq, timeout_s))
    entries, next_seq = await svc.logs.entries(app_id, after_seq, 0)
    return {"entries": entries, "next_seq": next_seq}


@functions_router.get("/v1/functions/lookup", response_model=FunctionInfo)
async def lookup_function(request: Request, app: str = Query(..., max_length=64),
                          name: str = Query(..., max_length=128)) -> FunctionInfo:
    svc = _svc(request)
    return svc.info(await svc.lookup(_who(request), app, name))


@functions_router.get("/v1/functions/{function_id}", response_model=FunctionInfo)
async def get_function(function_id: str, request: Request) -> FunctionInfo:
    svc = _svc(request)
    return svc.info(await svc.function(_who(request), function_id))


@functions_router.post("/v1/functions/{function_id}/calls", response_model=CallCreated)
async def create_call(function_id: str, body: CallCreate, request: Request) -> CallCreated:
    call = await _svc(request).create_call(_who(request), function_id, body)
    request.state.audit_detail = {"call": call.call_id, "inputs": call.inputs}
    return CallCreated(call_id=call.call_id, inputs=call.inputs)


@functions_router.post("/v1/calls/{call_id}/inputs", response_model=CallCreated)
async def add_inputs(call_id: str, body: CallInputs, request: Request) -> CallCreated:
    call = await _svc(request).add_inputs(_who(request), call_id, body)
    return CallCreated(call_id=call.call_id, inputs=call.inputs)


@functions_router.get("/v1/calls/{call_id}/outputs", response_model=CallOutputs)
async def call_outputs(call_id: str, request: Request, after_seq: int = Query(0, ge=0),
                       timeout_s: float = Query(0, ge=0, le=55)) -> CallOutputs:
    return await _svc(request).outputs(_who(request), call_id, after_seq, timeout_s)


@functions_router.get("/v1/calls/{call_id}", response_model=CallInfo)
async def call_info(call_id: str, request: Request) -> CallInfo:
    call = await _svc(request).call(_who(request), call_id)
    return CallInfo(call_id=call.call_id, function_id=call.function_id, kind=call.kind,
                    created_at=call.created_at, inputs=call.inputs,
                    finished=len(call.finished), closed=call.closed, cancelled=call.cancelled)


@functions_router.post("/v1/calls/{call_id}/cancel", response_model=CallInfo)
async def cancel_call(call_id: str, request: Request,
                      terminate_containers: bool = Query(False)) -> CallInfo:
    call = await _svc(request).cancel(_who(request), call_id, terminate_containers)
    return CallInfo(call_id=call.call_id, function_id=call.function_id, kind=call.kind,
                    created_at=call.created_at, inputs=call.inputs,
                    finished=len(call.finished), closed=call.closed, cancelled=call.cancelled)


@functions_router.get("/v1/containers", response_model=ContainerSummaryList)
async def list_containers(request: Request, app_id: str | None = Query(None)
                          ) -> ContainerSummaryList:
    return ContainerSummaryList(containers=_svc(request).containers(_who(request), app_id))


@functions_router.post("/v1/containers/{container_id}/stop")
async def stop_container(container_id: str, request: Request) -> dict:
    await _svc(request).stop_container(_who(request), container_id)
    return {"container_id": container_id, "stopped": True, "at": time.time()}
