"""Inbound ports: the authenticated HTTP reverse proxy into a sandbox (server layer).

`ANY /v1/sandboxes/{id}/ports/{port}/{path}` forwards one HTTP request to `port` inside the
sandbox and streams the answer back. The bytes travel over the in-sandbox agent's
control socket (`Runtime.open_port`), never over a network: the sandbox needs no
interface but loopback, and nothing on the host listens for it. The app's middleware has
already checked the bearer token and that the caller may see the sandbox (another
principal's sandbox is the same 404 as an unknown id); this module checks that the port
was declared at create (`encrypted_ports`/`unencrypted_ports`), strips the caller's
credentials and hop-by-hop headers, and frames the request and response with h11 (one
request per connection; bodies streamed both ways, never buffered; response headers
capped). The raw-TCP WebSocket route lives in `_ports_ws.py`.
Must not import a runtime backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator
from urllib.parse import quote

import h11
from fastapi import APIRouter, Path, Request

from ...wire import PORT_PATTERN, parse_port
from ...wire import errors as E
from ._streaming import OwnedStreamingResponse

log = logging.getLogger("sbx.server.ports")
ports_router = APIRouter()

MAX_RESPONSE_HEAD = 64 * 1024
HEAD_TIMEOUT_S = 600.0
CHUNK = 64 * 1024
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# never forwarded upstream: hop-by-hop headers, the caller's credentials for this service,
# and headers this proxy sets itself
_DROP_REQUEST = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
                 b"te", b"trailer", b"transfer-encoding", b"upgrade", b"authorization",
                 b"host", b"expect", b"x-forwarded-for", b"x-forwarded-host",
                 b"x-forwarded-proto", b"x-forwarded-prefix"}
_DROP_RESPONSE = {b"connection", b"keep-alive", b"proxy-authenticate", b"te", b"trailer",
                  b"transfer-encoding", b"upgrade"}
_PORT = Path(..., description="a port the sandbox declared at create (1-65535)",
             json_schema_extra={"pattern": PORT_PATTERN})


def port_number(text: str) -> int:
    """The port of a route's path, digits only (pydantic would take `8000.0` as 8000)."""
    try:
        return parse_port(text)
    except ValueError as e:
        raise E.InvalidRequestError(str(e)) from None


def target_of(scope: dict[str, Any], route_prefix: str, path: str) -> bytes:
    """The request target as the client sent it (still percent-encoded), minus our prefix."""
    prefix = route_prefix.encode()
    raw = scope.get("raw_path") or b""
    rest = raw[len(prefix):] if raw and raw.startswith(prefix) else quote(path).encode()
    if not rest.startswith(b"/"):
        rest = b"/" + rest
    qs = scope.get("query_string") or b""
    return rest + (b"?" + qs if qs else b"")


def _request_headers(request: Request, port: int, prefix: str,
                     keep_auth: bool = False) -> list[tuple[bytes, bytes]]:
    named_hop = {t.strip().lower().encode() for t in
                 request.headers.get("connection", "").split(",") if t.strip()}
    out = [(b"host", f"127.0.0.1:{port}".encode())]
    for k, v in request.headers.raw:
        lk = k.lower()
        if (lk in _DROP_REQUEST and not (keep_auth and lk == b"authorization")) \
                or lk in named_hop or lk == b"content-length":
            continue
        out.append((k, v))
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is not None:
        out.append((b"content-length", length.encode()))
    elif chunked:
        out.append((b"transfer-encoding", b"chunked"))
    client = request.client.host if request.client else ""
    out += [(b"x-forwarded-for", client.encode()),
            (b"x-forwarded-host", (request.headers.get("host") or "").encode()),
            (b"x-forwarded-proto", request.url.scheme.encode()),
            (b"x-forwarded-prefix", prefix.encode()),
            (b"connection", b"close")]
    return out


class _Upstream:
    """One proxied exchange: an h11 client connection over the agent's byte stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def send_body(self, request: Request) -> None:
        try:
            async for chunk in request.stream():
                if chunk:
                    await self.send(h11.Data(data=chunk))
            await self.send(h11.EndOfMessage())
        except (h11.LocalProtocolError, ConnectionError, OSError) as e:
            log.debug("proxy: request body not fully sent: %s", e)

    async def next_event(self) -> Any:
        while True:
            ev = self.h11.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            self.h11.receive_data(await self.reader.read(CHUNK))


class _Exchange:
    """What to release when the proxied response ends, however it ends (idempotent)."""

    def __init__(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.body_task: asyncio.Task | None = None
        self.closed = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.body_task is not None and not self.body_task.done():
            self.body_task.cancel()
        if self.body_task is not None:  # its failure is moot now; our own cancellation is not
            await asyncio.gather(self.body_task, return_exceptions=True)
        await self.stack.aclose()


async def proxy_http(request: Request, sandbox_id: str, port: int, path: str, *,
                     prefix: str | None = None, forwarded_prefix: str | None = None,
                     keep_auth: bool = False):
    """Forward one HTTP request to `port` inside the sandbox. `prefix`: the route's own part
    of the path (stripped; sent as X-Forwarded-Prefix unless `forwarded_prefix` says
    otherwise). `keep_auth`: pass Authorization on (the unguessable tunnel route: the header
    is the app's, not this service's)."""
    mgr = request.app.state.manager
    request.state.audit_detail = {"port": port, "method": request.method}
    if prefix is None:
        prefix = f"/v1/sandboxes/{sandbox_id}/ports/{port}"
    if request.headers.get("upgrade"):
        raise E.InvalidRequestError(
            "the HTTP proxy passes WebSocket upgrades through, not other protocol upgrades: "
            f"tunnel raw TCP with sb.forward_port({port}) or "
            f"`sbx sandbox port-forward {sandbox_id} {port}`")
    ex = _Exchange()
    try:
        reader, writer = await ex.stack.enter_async_context(mgr.port_stream(sandbox_id, port))
        up = _Upstream(reader, writer)
        try:
            await up.send(h11.Request(method=request.method,
                                      target=target_of(request.scope, prefix, path),
                                      headers=_request_headers(
                                          request, port, prefix if forwarded_prefix is None
                                          else forwarded_prefix, keep_auth)))
        except h11.LocalProtocolError as e:
            raise E.InvalidRequestError(f"cannot forward this request: {e}") from None
        ex.body_task = asyncio.create_task(up.send_body(request))
        try:
            head = await asyncio.wait_for(_response_head(up), HEAD_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise E.SandboxTimeoutError(f"the server on port {port} sent no response within "
                                        f"{HEAD_TIMEOUT_S:g}s") from None
        except (h11.RemoteProtocolError, ConnectionError, OSError) as e:
            if not mgr.is_live(sandbox_id):
                raise await mgr.interrupted(sandbox_id) from None
            raise E.PortUnreachableError(
                f"the server on port {port} of sandbox {sandbox_id} closed the connection or "
                f"answered something that is not HTTP/1.x ({e})", details={"port": port}) from None
    except BaseException:
        await ex.close()
        raise
    headers = [(k, v) for k, v in head.headers if k.lower() not in _DROP_RESPONSE]

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                ev = await up.next_event()
                if isinstance(ev, h11.Data):
                    yield bytes(ev.data)
                elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return
        except (h11.RemoteProtocolError, ConnectionError, OSError) as e:
            log.info("proxy: sandbox %s port %d: response cut short (%s)", sandbox_id, port, e)
        finally:
            await ex.close()

    resp = OwnedStreamingResponse(body(), status_code=head.status_code, cleanup=ex.close)
    resp.raw_headers = [(k.lower(), v) for k, v in headers]
    return resp


MAX_INFORMATIONAL = 16  # 1xx heads before the real one: more is a server stalling us


async def _response_head(up: _Upstream) -> Any:
    for _ in range(MAX_INFORMATIONAL + 1):
        ev = await up.next_event()
        if isinstance(ev, h11.Response):
            return ev
        if isinstance(ev, h11.ConnectionClosed):
            raise ConnectionError("closed before answering")
        # h11.InformationalResponse (100 Continue, 103 Early Hints): not passed on
    raise ConnectionError(f"sent more than {MAX_INFORMATIONAL} informational (1xx) responses")


@ports_router.api_route("/v1/sandboxes/{sandbox_id}/ports/{port}", methods=METHODS,
                        include_in_schema=False)
async def proxy_root(sandbox_id: str, request: Request, port: str = _PORT):
    return await proxy_http(request, sandbox_id, port_number(port), "/")


@ports_router.api_route("/v1/sandboxes/{sandbox_id}/ports/{port}/{path:path}", methods=METHODS,
                        summary="HTTP proxy to a declared port inside the sandbox")
async def proxy(sandbox_id: str, path: str, request: Request, port: str = _PORT):
    """Forwards the request (method, path after the port, query, headers minus the bearer
    token and hop-by-hop headers, streamed body) to 127.0.0.1:`port` inside the sandbox
    and streams its answer back. 404 for a port the sandbox did not declare, 502
    (`port_unreachable`) when nothing listens there."""
    return await proxy_http(request, sandbox_id, port_number(port), path)
