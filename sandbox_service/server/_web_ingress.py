"""Web endpoint ingress (server layer): raw ASGI middleware in front of the API that sends
`/web/<label>/...` (and, with `SBX_WEB_DOMAIN`, any request whose Host is
`<label>.<domain>`) to the function behind the label, streaming both ways, WebSockets
included; a Host `<tunnel token>.<domain>` becomes a request to /tunnels/<token>/...
(routes/_tunnels.py); everything else goes on to the API.

Auth follows Modal: an endpoint is open unless it was declared `requires_proxy_auth=True`
or the server runs with `SBX_WEB_REQUIRE_AUTH=1`; then the request needs
`Authorization: Bearer <token>` of the endpoint's owner (the admin token, the owner's key,
or an app key of its app), which is stripped before the app sees the request. The body
limit is `SBX_WEB_MAX_BODY_MIB`; the request timeout is the function's `timeout`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from . import _access as access

log = logging.getLogger("sbx.web")
_TUNNEL_LABEL = re.compile(r"^sb-[a-z0-9]{20}-[0-9]{1,5}-[a-z2-7]{26}$")


class WebIngress:
    def __init__(self, app: Any, *, domain: str | None, require_auth: bool, max_body: int):
        self.app = app
        self.domain = (domain or "").lower().strip(".") or None
        self.require_auth = require_auth
        self.max_body = max_body

    def _route(self, scope: dict[str, Any]) -> tuple[str, str] | None:
        """(label, root_path) of a web request, or None for the API."""
        if self.domain:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                         if k == b"host"), "").split(":")[0].lower()
            if host.endswith("." + self.domain):
                label = host[: -len(self.domain) - 1]
                if label and "." not in label:
                    return label, ""
        path = scope.get("path", "")
        if path.startswith("/web/"):
            label = path[5:].split("/", 1)[0]
            if label:
                return label, f"/web/{label}"
        return None

    def _tunnel(self, scope: dict[str, Any]) -> dict[str, Any] | None:
        """A request to `<tunnel token>.<domain>`, as one to /tunnels/<token>/... (routes/
        _tunnels.py), else None."""
        if not self.domain:
            return None
        host = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                     if k == b"host"), "").split(":")[0].lower()
        label = host[: -len(self.domain) - 1] if host.endswith("." + self.domain) else ""
        if not _TUNNEL_LABEL.match(label):
            return None
        prefix = f"/tunnels/{label}"
        return {**scope, "path": prefix + scope.get("path", "/"),
                "raw_path": prefix.encode() + (scope.get("raw_path") or b"/"),
                "sbx.tunnel_host": True}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        tunneled = self._tunnel(scope) if scope["type"] in ("http", "websocket") else None
        if tunneled is not None:
            await self.app(tunneled, receive, send)
            return
        route = self._route(scope) if scope["type"] in ("http", "websocket") else None
        if route is None:
            await self.app(scope, receive, send)
            return
        from .services import web_error_response as error_response

        label, root_path = route
        functions = getattr(scope["app"].state, "functions", None)  # Starlette sets "app"
        fn = functions.web_function(label) if functions is not None else None
        if fn is None:
            await error_response(scope, send, 404, f"no web endpoint {label!r}: `sbx app ls` "
                                 "lists the apps; deployed endpoints print their URLs\n")
            return
        if root_path and scope["path"] == root_path:  # /web/x -> /web/x/ (relative links)
            if scope["type"] == "http":
                qs = scope.get("query_string") or b""
                location = (root_path + "/").encode() + (b"?" + qs if qs else b"")
                await send({"type": "http.response.start", "status": 307,
                            "headers": [(b"location", location)]})
                await send({"type": "http.response.body", "body": b""})
                return
        if self.require_auth or fn["spec"]["web"].get("requires_proxy_auth"):
            if not await self._authorized(scope, fn):
                await error_response(scope, send, 401, "this endpoint requires "
                                     "'Authorization: Bearer <token>' of its owner "
                                     "(requires_proxy_auth)\n")
                return
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                          if k != b"authorization"]}
            fn = functions.web_function(label)  # a redeploy during the auth check
            if fn is None:
                await error_response(scope, send, 404, f"no web endpoint {label!r}\n")
                return
        await functions.serve_web(fn, scope, receive, send, root_path, self.max_body,
                                  proxy=_port_proxy(scope, receive, root_path))

    async def _authorized(self, scope: dict[str, Any], fn: dict[str, Any]) -> bool:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        who = await access.resolve(scope["app"], access.bearer_token(headers))
        if who is None:
            return False
        if who.is_admin:
            return True
        if who.scope == "app":
            return who.target == fn["app_id"]
        return who.scope == "user" and who.name == fn["owner"]


def _port_proxy(scope: dict[str, Any], receive: Any, root_path: str) -> Any:
    """How a `@web_server` endpoint's request reaches the server in its container: the
    sandbox port proxy (HTTP, or the WebSocket bridge), with the app's own headers."""
    from starlette.requests import Request
    from starlette.websockets import WebSocket

    from .routes import bridge_websocket, proxy_http

    async def proxy(sandbox_id: str, port: int, send: Any) -> None:
        path = scope["path"][len(root_path):] or "/"
        if scope["type"] == "websocket":
            await bridge_websocket(WebSocket(scope, receive, send), sandbox_id, port,
                                   prefix=root_path, path=path, keep_auth=True)
            return
        response = await proxy_http(Request(scope, receive), sandbox_id, port, path,
                                    prefix=root_path, keep_auth=True)
        await response(scope, receive, send)
    return proxy
