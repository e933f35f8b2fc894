"""HTTP and WebSocket routes (server layer): thin adapters from the wire to the services.

A route parses the wire model, calls one service method and shapes the answer; it holds no
state and decides nothing about sandboxes. Auth ran before it (`server._access`: the HTTP
middleware, or the WebSocket route's first lines, through the same two functions).

| module | routes |
|---|---|
| `_sandboxes` | sandboxes, non-streaming exec, files, logs, apps, `/v1/info`, `/health` |
| `_exec_ws` | the exec WebSocket (`/exec/stream`) |
| `_ports`, `_ports_ws` | the inbound port proxy (HTTP, raw TCP over WebSocket) |
| `_tunnels`, `_ws_bridge` | unguessable tunnel URLs (`/tunnels/<token>/`), WebSockets through the port proxy |
| `_contexts` | the code interpreter's contexts |
| `_functions` | apps (deploy, stop, logs), functions, calls and their outputs, function containers |
| `_kv` | Dicts and Queues, and what Volumes share with them (lookup, ephemeral, delete) |
| `_volumes` | Volumes' files (list, read, write, remove, copy, usage) |
| `_images`, `_secrets`, `_tokens`, `_audit` | images and blobs, named secrets, API keys, the audit log |

"""

from fastapi import FastAPI

from ._audit import audit_request, audit_router
from ._contexts import contexts_router
from ._exec_ws import ws_router
from ._functions import functions_router
from ._images import images_router
from ._kv import kv_router
from ._ports import ports_router, proxy_http
from ._ports_ws import ports_ws_router
from ._sandboxes import router as sandboxes_router
from ._secrets import secrets_router
from ._tokens import tokens_router
from ._tunnels import tunnels_router
from ._volumes import volumes_router
from ._ws_bridge import bridge as bridge_websocket

ROUTERS = (sandboxes_router, audit_router, tokens_router, images_router, secrets_router,
           ws_router, ports_router, ports_ws_router, contexts_router, functions_router, kv_router,
           volumes_router, tunnels_router)


def include_routes(app: FastAPI) -> None:
    """Mount every router on `app` (the order is the OpenAPI document's order)."""
    for r in ROUTERS:
        app.include_router(r)


__all__ = ["ROUTERS", "audit_request", "bridge_websocket", "include_routes", "proxy_http"]
