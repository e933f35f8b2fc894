"""API keys and scoped tokens over REST (server layer).

    POST   /v1/tokens          create: the admin makes `user` keys for any principal; a
                               user (or app) key mints narrower tokens for its own objects
    GET    /v1/tokens          list (the admin: all; others: their principal's), no secrets
    DELETE /v1/tokens/{id}     revoke (the admin: any; others: their principal's)
The key itself is returned once, at creation; only its hash is stored.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from security import PRINCIPAL_RE, Principal

from ...wire import errors as E
from .. import _access as access

tokens_router = APIRouter()
MAX_TTL_S = 366 * 86400


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["user", "sandbox", "app"] = "user"
    principal: str | None = Field(None, max_length=64, description="user keys: who it acts for")
    sandbox_id: str | None = Field(None, max_length=64)
    app_id: str | None = Field(None, max_length=64)
    ttl_s: float | None = Field(None, gt=0, le=MAX_TTL_S, description="lifetime; none: no expiry")
    name: str | None = Field(None, max_length=128)


def _who(request: Request) -> Principal:
    return request.state.principal


@tokens_router.post("/v1/tokens", status_code=201)
async def create_token(body: TokenCreate, request: Request) -> dict:
    who = _who(request)
    keys = request.app.state.keys
    target = None
    if body.scope == "user":
        if not who.is_admin:
            raise E.PermissionDeniedError("only the admin token can create user keys; mint a "
                                          "sandbox- or app-scoped token instead")
        if not body.principal or not PRINCIPAL_RE.match(body.principal) or body.principal == "admin":
            raise E.InvalidRequestError("a user key needs principal= (letters, digits, . _ @ -; "
                                        "not 'admin')")
        principal = body.principal
    else:
        if who.scope == "sandbox":
            raise E.PermissionDeniedError("a sandbox-scoped token cannot mint tokens")
        if body.scope == "sandbox":
            if not body.sandbox_id:
                raise E.InvalidRequestError("a sandbox-scoped token needs sandbox_id=")
            rec = await request.app.state.manager.get(body.sandbox_id)
            if not access.owns(who, rec):
                raise E.NotFoundError(f"no sandbox {body.sandbox_id!r}")
            target = body.sandbox_id
        else:
            if not body.app_id:
                raise E.InvalidRequestError("an app-scoped token needs app_id=")
            if who.scope == "app" and who.target != body.app_id:
                raise E.PermissionDeniedError(f"this token is limited to app {who.target}")
            app = await request.app.state.manager.store.get_app(body.app_id)
            if app is None or not access.owns_app(who, app):
                raise E.NotFoundError(f"no app {body.app_id!r}")
            target = body.app_id
        principal = who.name
    ttl = body.ttl_s
    if who.expires_at is not None:  # never outlive the token that minted it
        import time

        left = who.expires_at - time.time()
        ttl = min(ttl or left, left)
    key, rec = await keys.create(principal=principal, scope=body.scope, target=target,
                                 ttl_s=ttl, name=body.name, created_by=who.name)
    request.state.audit_object = rec["id"]
    return {"token": key, **rec}


@tokens_router.get("/v1/tokens")
async def list_tokens(request: Request) -> dict:
    who = _who(request)
    if who.scope == "sandbox":
        raise E.PermissionDeniedError("a sandbox-scoped token cannot list tokens")
    keys = request.app.state.keys
    return {"tokens": await keys.list(None if who.is_admin else who.name)}


@tokens_router.delete("/v1/tokens/{token_id}")
async def revoke_token(token_id: str, request: Request) -> dict:
    who = _who(request)
    keys = request.app.state.keys
    rec = await keys.get(token_id)
    if rec is None or not (who.is_admin or (who.scope != "sandbox" and rec["principal"] == who.name)):
        raise E.NotFoundError(f"no token {token_id!r}")
    await keys.revoke(token_id)
    return {"id": token_id, "revoked": True}
