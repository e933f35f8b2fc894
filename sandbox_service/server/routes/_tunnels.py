"""Tunnels (server layer): the unguessable URLs of sandboxes' declared ports, and WebSockets
through both port routes.

- `GET /v1/sandboxes/{id}/tunnels`: the owner learns each declared port's token
  (services/_tunnel_keys.py) and, with SBX_WEB_DOMAIN, its host-routed URL.
- `ANY /tunnels/{token}/{path}` (and `<token>.<domain>`, rewritten here by the web ingress):
  no Authorization needed, the token is the capability; the request, Authorization header
  included, goes to the port as on the token-guarded route (`proxy_http`).
- WebSocket on `/tunnels/{token}/{path}` and on the token-guarded
  `/v1/sandboxes/{id}/ports/{port}/{path}` (bearer token checked here, as WebSocket routes
  do): bridged to the server inside (`_ws_bridge.py`). The raw-TCP route `.../connect` keeps
  its meaning (it is matched first).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket

from ...wire import TunnelInfo, TunnelList
from ...wire import errors as E
from .. import _access as access
from ._ports import METHODS, port_number, proxy_http
from ._ws_bridge import bridge, refuse

tunnels_router = APIRouter()


@tunnels_router.get("/v1/sandboxes/{sandbox_id}/tunnels", response_model=TunnelList)
async def sandbox_tunnels(sandbox_id: str, request: Request) -> TunnelList:
    """Each declared port's token: `<server>/tunnels/<token>/` reaches the port with no
    header, until the sandbox ends."""
    mgr = request.app.state.manager
    rec = await mgr.get(sandbox_id)
    settings = request.app.state.settings
    out = []
    for port in sorted(rec.ports):
        token = mgr.tunnel_keys.token(sandbox_id, port)
        url = f"{settings.web_scheme}://{token}.{settings.web_domain}" \
            if settings.web_domain else None
        out.append(TunnelInfo(port=port, token=token, url=url))
    return TunnelList(tunnels=out)


def _open(request_or_ws, token: str) -> tuple[str, int]:
    found = request_or_ws.app.state.manager.tunnel_keys.parse(token)
    if found is None:
        raise E.NotFoundError("no such tunnel (a tunnel's URL stops working when its "
                              "sandbox ends)")
    return found


def _prefixes(scope: dict, token: str) -> tuple[str, str]:
    """(prefix to strip, X-Forwarded-Prefix): host-routed requests have none."""
    prefix = f"/tunnels/{token}"
    return prefix, "" if scope.get("sbx.tunnel_host") else prefix


@tunnels_router.api_route("/tunnels/{token}", methods=METHODS, include_in_schema=False)
async def tunnel_root(token: str, request: Request):
    sandbox_id, port = _open(request, token)
    prefix, fwd = _prefixes(request.scope, token)
    return await proxy_http(request, sandbox_id, port, "/", prefix=prefix,
                            forwarded_prefix=fwd, keep_auth=True)


@tunnels_router.api_route("/tunnels/{token}/{path:path}", methods=METHODS,
                          include_in_schema=False)  # for browsers; docs/network.md
async def tunnel(token: str, path: str, request: Request):
    """No Authorization header needed: the token names the sandbox and port and proves the
    server made it. The request, Authorization header included, goes to the port."""
    sandbox_id, port = _open(request, token)
    prefix, fwd = _prefixes(request.scope, token)
    return await proxy_http(request, sandbox_id, port, path, prefix=prefix,
                            forwarded_prefix=fwd, keep_auth=True)


@tunnels_router.websocket("/tunnels/{token}")
@tunnels_router.websocket("/tunnels/{token}/{path:path}")
async def tunnel_ws(ws: WebSocket, token: str, path: str = "") -> None:
    try:
        sandbox_id, port = _open(ws, token)
    except E.SandboxError as e:
        await refuse(ws, 1008, e.message)
        return
    await bridge(ws, sandbox_id, port, prefix=f"/tunnels/{token}", path=path, keep_auth=True)


@tunnels_router.websocket("/v1/sandboxes/{sandbox_id}/ports/{port}/{path:path}")
async def port_ws(ws: WebSocket, sandbox_id: str, port: str, path: str) -> None:
    """A WebSocket to a declared port through the token-guarded route."""
    try:
        principal = await access.authenticate(ws)
        number = port_number(port)
        await access.authorize(ws, principal)
    except E.SandboxError as e:
        await refuse(ws, 1008, e.message)
        return
    await bridge(ws, sandbox_id, number, prefix=f"/v1/sandboxes/{sandbox_id}/ports/{port}",
                 path=path, keep_auth=False)
