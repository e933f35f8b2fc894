"""The MCP server over streamable HTTP, mounted at `/mcp` on the main app (agent-tools
layer, server-facing glue).

- Authentication: the REST API's bearer tokens, through a `TokenVerifier` over the
  injected `resolve(token) -> principal | None`; a request without a valid token gets 401
  with `WWW-Authenticate: Bearer ... resource_metadata=".../.well-known/oauth-protected-resource/mcp"`.
- Tools act as the caller: each call uses an SDK client pointed at this server's own
  loopback URL with the caller's token, so every access check, quota and audit record of the
  REST API applies unchanged. The token never enters a sandbox.
- DNS-rebinding protection: Host must be loopback or listed in SBX_MCP_ALLOWED_HOSTS
  (comma-separated host:port patterns; `*` turns the check off).
- Cleanup: a scope's sandboxes end with its MCP session, after SBX_MCP_IDLE_S (1800) idle,
  or when its token stops resolving; that cleanup goes through the injected `terminate`.

Imports FastAPI/Starlette and `mcp`; must not import `sandbox_service.server` (the server
passes in what it needs) or a runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware, get_access_token
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route

from sandbox_service.aio import Client

from ._mcp import create_mcp_server, token_key
from ._scopes import ScopeRegistry

Resolve = Callable[[str | None], Awaitable[Any]]
MAX_CLIENTS = 256              # cached clients in all
MAX_CLIENTS_PER_PRINCIPAL = 16  # of one principal (it may mint many tokens)


class SbxTokenVerifier:
    """The REST API's tokens, as the MCP SDK's TokenVerifier."""

    def __init__(self, resolve: Resolve):
        self._resolve = resolve

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = await self._resolve(token)
        if principal is None:
            return None
        who = f"{principal.name}/{principal.scope}/{principal.target or '-'}"
        return AccessToken(token=token, client_id=who, scopes=[], subject=principal.name,
                           expires_at=int(principal.expires_at) if principal.expires_at else None)


class _Entry:
    __slots__ = ("client", "owner", "users", "evicted")

    def __init__(self, client: Client, owner: str):
        self.client, self.owner, self.users, self.evicted = client, owner, 0, False


class CallerClients:
    """A loopback SDK client per caller token (the ClientSource of the HTTP mount).

    Cached (least recently used first out, at most MAX_CLIENTS, at most
    MAX_CLIENTS_PER_PRINCIPAL of one principal: one minting many tokens evicts its own
    clients, not other principals'). Each call holds its client until `release`; a client
    evicted while calls use it is closed when the last of them ends, never under them."""

    def __init__(self, loopback_url: str, resolve: Resolve):
        self.url = loopback_url
        self._resolve = resolve
        self._clients: OrderedDict[str, _Entry] = OrderedDict()
        self._held: dict[int, _Entry] = {}  # id(client) -> entry, while calls use it

    async def for_call(self, ctx: Context) -> tuple[Client, str]:
        token = None
        request = getattr(ctx.request_context, "request", None)
        headers = getattr(request, "headers", None)
        if headers is not None:
            scheme, _, value = (headers.get("authorization") or "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token and (access := get_access_token()) is not None:
            token = access.token
        principal = await self._resolve(token) if token else None
        if principal is None:
            raise ToolError("the bearer token of this MCP request is missing, expired or "
                            "revoked: reconnect with a valid token (`sbx token create`)")
        return self.acquire(token, str(getattr(principal, "name", "") or "")), token_key(token)

    def acquire(self, token: str, owner: str) -> Client:
        """The cached client of `token` (made if needed), held until `release`."""
        entry = self._clients.get(token)
        if entry is None:
            entry = self._clients[token] = _Entry(Client(self.url, token), owner)
            self._evict(owner)
        self._clients.move_to_end(token)
        entry.users += 1
        self._held[id(entry.client)] = entry
        return entry.client

    def release(self, client: Client) -> None:
        entry = self._held.get(id(client))
        if entry is None:
            return
        entry.users -= 1
        if entry.users <= 0:
            del self._held[id(client)]
            if entry.evicted:
                asyncio.ensure_future(entry.client.close())

    def _evict(self, owner: str) -> None:
        mine = [t for t, e in self._clients.items() if e.owner == owner]
        for token in mine[:max(0, len(mine) - MAX_CLIENTS_PER_PRINCIPAL)]:
            self._drop(token)
        for token in list(self._clients)[:max(0, len(self._clients) - MAX_CLIENTS)]:
            self._drop(token)

    def _drop(self, token: str) -> None:
        entry = self._clients.pop(token)
        entry.evicted = True
        if entry.users <= 0:  # else closed by the release of its last call
            asyncio.ensure_future(entry.client.close())

    async def close(self) -> None:
        for entry in list(self._clients.values()) + list(self._held.values()):
            if not entry.client._http.is_closed:
                await entry.client.close()
        self._clients.clear()
        self._held.clear()


def loopback_url(host: str, port: int, override: str | None = None) -> str:
    if override:
        return override.rstrip("/")
    if host in ("", "0.0.0.0", "127.0.0.1", "localhost"):
        return f"http://127.0.0.1:{port}"
    if host in ("::", "::1"):
        return f"http://[::1]:{port}"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def transport_security(allowed_hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    extra = [h.strip() for h in allowed_hosts if h.strip()]
    if "*" in extra:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *extra]
    origins = [f"http://{h}" for h in hosts] + [f"https://{h}" for h in extra]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


def mount_mcp(app: Any, *, resolve: Resolve, terminate: Callable[[str], Awaitable[Any]],
              host: str, port: int, public_url: str | None = None,
              loopback: str | None = None, allowed_hosts: Sequence[str] = (),
              idle_s: float = 1800.0, sweep_s: float = 30.0
              ) -> Callable[[], contextlib.AbstractAsyncContextManager]:
    """Add `/mcp` (and its protected-resource metadata) to `app`; returns the lifespan to
    enter inside the app's own lifespan (it runs the session manager and the reaper). The
    server passes its settings (`McpSettings`): this module reads no environment."""
    own = loopback_url(host, port, loopback)
    base = (public_url or "").rstrip("/") or own
    resource = AnyHttpUrl(base + "/mcp")
    auth = AuthSettings(issuer_url=AnyHttpUrl(base), resource_server_url=resource,
                        validate_token_resource=False)
    verifier = SbxTokenVerifier(resolve)
    clients = CallerClients(own, resolve)

    async def cleanup(ids: list[str], token: str | None) -> None:
        for sid in ids:  # with the server's own authority: the token may be revoked by now
            with contextlib.suppress(Exception):
                await terminate(sid)

    async def token_valid(token: str | None) -> bool:
        return bool(token) and await resolve(token) is not None

    registry = ScopeRegistry(cleanup, idle_s=idle_s,
                             token_valid=token_valid)
    server, _ = create_mcp_server(clients, registry, token_verifier=verifier, auth=auth,
                                  log_level="WARNING")
    server.streamable_http_app(streamable_http_path="/mcp", transport_security=transport_security(allowed_hosts),
                               host=host)  # builds server.session_manager
    manager = server.session_manager

    async def handle(scope, receive, send) -> None:
        await manager.handle_request(scope, receive, send)

    endpoint = AuthenticationMiddleware(
        AuthContextMiddleware(RequireAuthMiddleware(handle, [], build_resource_metadata_url(resource))),
        backend=BearerAuthBackend(verifier))
    app.router.routes.append(Route("/mcp", endpoint=endpoint, methods=["GET", "POST", "DELETE"],
                                   include_in_schema=False))
    app.router.routes.extend(create_protected_resource_routes(
        resource_url=resource, authorization_servers=[AnyHttpUrl(base)],
        resource_name="sandbox-service MCP"))
    app.state.mcp_registry = registry

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        reaper = asyncio.ensure_future(registry.run_reaper(sweep_s))
        try:
            async with manager.run():
                yield
        finally:
            reaper.cancel()
            await registry.close_all()
            await clients.close()

    return lifespan
