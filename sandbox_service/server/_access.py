"""Who may touch what (server layer): resolving a bearer token to a principal, and the one
check every /v1 request and WebSocket passes before its handler runs: `authenticate`
(bearer token -> principal, or 401) and `authorize` (may this principal make this request,
or 403/404). The HTTP middleware and the WebSocket routes call the same two functions.

- The admin token acts for "admin" and sees everything.
- A `user` key sees only objects its principal created: another principal's sandbox or
  image answers exactly like an id that does not exist (404), so existence never leaks.
- A `sandbox` token reaches one sandbox: its info, logs, wait, exec, files, declared
  ports and code interpreter contexts; nothing else (not terminate, snapshot, lists,
  images, secrets, keys).
- An `app` token reaches the sandboxes of one app and may create sandboxes in it (with its
  principal's named secrets, which it cannot list or change), and may call its
  principal's functions and use its principal's Dicts and Queues. Code inside a function container acts as such a principal
  (its owner, scoped to its app), set in-process by the runner relay, never by a token.
- Named secrets live in one namespace per principal (services/_secrets.py), so they need no
  check here beyond the scope rules above.
Must not import a runtime.
"""

from __future__ import annotations

import re
from typing import Any

from security import ADMIN, Principal

from ..wire import errors as E

_SANDBOX_PATH = re.compile(r"^/v1/sandboxes/([^/]+)(/.*)?$")
_IMAGE_PATH = re.compile(r"^/v1/images/([^/]+)$")
# what a sandbox-scoped token may do to its sandbox: (method, sub-path regex)
_SANDBOX_TOKEN_OPS = (
    ("GET", r""), ("GET", r"/logs"), ("POST", r"/wait"), ("POST", r"/exec"), ("POST", r"/stdin"),
    ("GET", r"/exec/stream"), ("GET", r"/files(/list|/stat)?"), ("PUT", r"/files"),
    ("DELETE", r"/files"), ("POST", r"/files/mkdir"),
    ("*", r"/ports/[0-9]+(/.*)?"),  # its declared ports, through the proxy (any method)
    # the code interpreter's contexts
    ("GET", r"/contexts(/[^/]+)?"), ("POST", r"/contexts(/[^/]+/(run|interrupt))?"),
    ("DELETE", r"/contexts/[^/]+"),
)


def bearer_token(headers: Any) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticate(conn: Any) -> Principal:
    """The principal behind an HTTP request's or WebSocket's bearer token, or a 401 error
    (audited as `auth.denied`). `conn` is a Starlette Request or WebSocket."""
    principal = conn.scope.get("sbx.principal")  # a function container's relayed stream
    if principal is None:
        principal = await resolve(conn.app, bearer_token(conn.headers))
    if principal is None:
        audit = getattr(conn.app.state, "audit", None)
        if audit is not None:
            method = conn.scope.get("method", "WEBSOCKET")
            audit.record("anonymous", "auth.denied", None, 401, method=method,
                         path=conn.url.path[:300])
        raise E.AuthenticationError("missing, wrong, expired or revoked bearer token: send "
                                    "'Authorization: Bearer <token>' (the admin token is "
                                    "in $SBX_HOME/token; keys come from `sbx token create`)")
    return principal


async def authorize(conn: Any, principal: Principal, method: str | None = None) -> None:
    """Raise NotFound / PermissionDenied unless `principal` may make this request (WebSockets
    are checked as a GET of their path)."""
    await check(conn.app, principal, method or conn.scope.get("method", "GET"), conn.url.path)


async def resolve(app: Any, token: str | None) -> Principal | None:
    from security import token_matches

    if token_matches(app.state.token, token):
        return ADMIN
    keys = getattr(app.state, "keys", None)
    return await keys.resolve(token) if keys is not None else None


def owns(principal: Principal, rec: Any) -> bool:
    """Whether `principal` may see the sandbox record `rec` (a `SandboxRecord`) at all."""
    if principal.is_admin:
        return True
    if principal.scope == "sandbox":
        return rec.sandbox_id == principal.target
    if principal.scope == "app":  # its app's sandboxes that its principal made
        return (rec.app_id is not None and rec.app_id == principal.target
                and rec.owner == principal.name)
    return rec.owner == principal.name


def owns_app(principal: Principal, app: Any) -> bool:
    """Whether `principal` may use the app record `app` (an `AppRecord`; apps are named
    per principal)."""
    return principal.is_admin or app.owner == principal.name


async def check(app: Any, principal: Principal, method: str, path: str) -> None:
    """Raise NotFound / PermissionDenied when `principal` may not make this request."""
    if principal.is_admin:
        return
    m = _SANDBOX_PATH.match(path)
    if principal.scope == "sandbox":
        sub = (m.group(2) or "") if m else None
        if m is None or not any(meth in (method, "*") and re.fullmatch(rx, sub)
                                for meth, rx in _SANDBOX_TOKEN_OPS):
            raise E.PermissionDeniedError(
                f"this token is limited to exec and files of sandbox {principal.target}: "
                "use a key of the sandbox's owner for anything else")
    if m is not None:
        sandbox_id = m.group(1)
        try:
            rec = await app.state.manager.get(sandbox_id)
        except E.NotFoundError:
            raise
        if not owns(principal, rec):
            raise E.NotFoundError(f"no sandbox {sandbox_id!r}")
        return
    if principal.scope == "app" and path not in (
            "/v1/sandboxes", "/v1/apps/lookup", "/v1/tokens", "/v1/info") and not path.startswith(
            ("/v1/functions/", "/v1/calls/",  # its principal's functions (checked there)
             "/v1/dicts", "/v1/queues", "/v1/volumes")):  # its principal's storage
        raise E.PermissionDeniedError(
            f"this token is limited to the sandboxes of app {principal.target}")
    mi = _IMAGE_PATH.match(path)
    if mi is not None and mi.group(1) != "gc":
        await check_image(app, principal, mi.group(1))
    if path.startswith("/v1/audit") or path == "/v1/images/gc":
        raise E.PermissionDeniedError("only the admin token may do this")


async def check_image(app: Any, principal: Principal, image_id: str) -> None:
    svc = app.state.image_service
    if principal.is_admin or svc.base.get(image_id) is not None:
        return
    rec = await svc.store.get_image(image_id) if image_id.startswith("im-") else None
    if rec is None or principal.name not in rec.get("owners", ["admin"]):
        raise E.NotFoundError(f"no image {image_id!r}: `sbx image ls` lists the images; "
                              "build one with Image...build()")
