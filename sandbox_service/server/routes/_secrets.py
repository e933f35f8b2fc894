"""REST routes for named secrets (server layer). No route ever returns a value: after
creation a secret is only metadata (name, key names, times) to the API; its values reach
nothing but the environment of the containers that name it. Each principal sees and
manages its own namespace only (see _secrets.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ...wire import SecretCreate, SecretInfo, SecretList
from ..services import SecretService, secret_meta

secrets_router = APIRouter()


def _svc(request: Request) -> SecretService:
    return request.app.state.manager.secrets


def _owner(request: Request) -> str:
    return request.state.principal.name


@secrets_router.post("/v1/secrets", response_model=SecretInfo)
async def create_secret(body: SecretCreate, request: Request) -> SecretInfo:
    request.state.audit_detail = {"secret": body.name, "keys": sorted(body.env)}  # no values
    return SecretInfo(**await _svc(request).create(_owner(request), body.name, body.env,
                                                 overwrite=body.overwrite))


@secrets_router.get("/v1/secrets", response_model=SecretList)
async def list_secrets(request: Request) -> SecretList:
    return SecretList(secrets=[SecretInfo(**m) for m in await _svc(request).list(_owner(request))])


@secrets_router.get("/v1/secrets/{name}", response_model=SecretInfo)
async def get_secret(name: str, request: Request,
                     required_keys: list[str] | None = Query(None)) -> SecretInfo:
    return SecretInfo(**secret_meta(await _svc(request).get(_owner(request), name,
                                                           required_keys or ())))


@secrets_router.delete("/v1/secrets/{name}")
async def delete_secret(name: str, request: Request) -> dict:
    await _svc(request).delete(_owner(request), name)
    return {"name": name, "deleted": True}
