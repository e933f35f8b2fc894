"""Which requests the audit log records, and the route that reads it (server layer).

The app's middleware calls `audit_request` after every /v1 response; actions are named
by route template, objects are the path's id (or what the handler put in
`request.state.audit_object`, e.g. a new sandbox's id). WebSocket execs are recorded by
the WebSocket handlers (exec; port tunnels as `port.connect`). Must not import a runtime.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request

from ...wire import errors as E

ACTIONS = {
    ("POST", "/v1/sandboxes"): "sandbox.create",
    ("DELETE", "/v1/sandboxes/{sandbox_id}"): "sandbox.terminate",
    ("PUT", "/v1/sandboxes/{sandbox_id}/tags"): "sandbox.tags",
    ("POST", "/v1/sandboxes/{sandbox_id}/exec"): "sandbox.exec",
    ("GET", "/v1/sandboxes/{sandbox_id}/logs"): "sandbox.logs",
    ("POST", "/v1/sandboxes/{sandbox_id}/snapshot"): "sandbox.snapshot",
    ("GET", "/v1/sandboxes/{sandbox_id}/files"): "file.read",
    ("PUT", "/v1/sandboxes/{sandbox_id}/files"): "file.write",
    ("DELETE", "/v1/sandboxes/{sandbox_id}/files"): "file.remove",
    ("GET", "/v1/sandboxes/{sandbox_id}/files/list"): "file.list",
    ("GET", "/v1/sandboxes/{sandbox_id}/files/stat"): "file.stat",
    ("POST", "/v1/sandboxes/{sandbox_id}/files/mkdir"): "file.mkdir",
    ("POST", "/v1/sandboxes/{sandbox_id}/contexts"): "context.create",
    ("DELETE", "/v1/sandboxes/{sandbox_id}/contexts/{context_id}"): "context.delete",
    ("POST", "/v1/sandboxes/{sandbox_id}/contexts/{context_id}/interrupt"): "context.interrupt",
    ("POST", "/v1/sandboxes/{sandbox_id}/contexts/{context_id}/run"): "context.run",
    ("POST", "/v1/images"): "image.build",
    ("DELETE", "/v1/images/{image_id}"): "image.remove",
    ("POST", "/v1/images/gc"): "image.gc",
    ("POST", "/v1/secrets"): "secret.create",
    ("DELETE", "/v1/secrets/{name}"): "secret.remove",
    ("POST", "/v1/apps/lookup"): "app.lookup",
    ("POST", "/v1/tokens"): "token.create",
    ("DELETE", "/v1/tokens/{token_id}"): "token.revoke",
    # inbound ports (any method): port and method only, never headers, body or query
    ("*", "/v1/sandboxes/{sandbox_id}/ports/{port}"): "port.http",
    ("*", "/v1/sandboxes/{sandbox_id}/ports/{port}/{path:path}"): "port.http",
}
ID_PARAMS = ("sandbox_id", "image_id", "name", "token_id")

audit_router = APIRouter()


def exec_detail(argv: list[str]) -> dict:
    """A command as the audit log keeps it: its program and argument count, never its
    arguments (they may carry credentials)."""
    return {"program": (argv[0] if argv else "")[:256], "argc": len(argv)}


def audit_request(request: Request, status: int) -> None:
    audit = getattr(request.app.state, "audit", None)
    if audit is None:
        return
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    action = ACTIONS.get((request.method, template or "")) or ACTIONS.get(("*", template or ""))
    who = getattr(request.state, "principal", None)
    principal = getattr(who, "name", None) or "anonymous"
    if status == 401:
        audit.record(principal, "auth.denied", None, status, method=request.method,
                     path=request.url.path[:300])
        return
    if action is None:
        return
    obj = getattr(request.state, "audit_object", None) or next(
        (str(request.path_params[p]) for p in ID_PARAMS if p in request.path_params), None)
    detail = dict(getattr(request.state, "audit_detail", None) or {})
    if "path" in request.query_params and action.startswith("file."):
        detail["path"] = request.query_params["path"][:512]
    audit.record(principal, action, obj, status, **detail)


@audit_router.get("/v1/audit")
async def read_audit(request: Request, object: str | None = Query(None, max_length=128),
                     action: str | None = Query(None, max_length=64),
                     principal: str | None = Query(None, max_length=128),
                     since_s: float | None = Query(None, gt=0, description="seconds back"),
                     limit: int = Query(100, ge=1, le=10_000)) -> dict:
    audit = request.app.state.audit
    if audit is None:
        raise E.RuntimeUnavailableError("the audit log is not open")
    since = time.time() - since_s if since_s else None
    return {"records": await audit.query(obj=object, action=action, principal=principal,
                                         since=since, limit=limit)}
