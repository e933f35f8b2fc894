"""Inbound ports on the client side: `Tunnel` (what `sb.tunnels()` returns) and
`PortForward` (`sb.forward_port()`: a local TCP listener, like `kubectl port-forward`,
that tunnels each connection over the server's WebSocket route
/v1/sandboxes/{id}/ports/{port}/connect with this client's token). Public layer, async
implementation + sync wrapper; reaches the server only through `_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from ._client import _Client, ws_error
from ._sync import Wrapped
from .wire import errors as E

log = logging.getLogger("sandbox_service.tunnel")
CHUNK = 64 * 1024
EOF_FRAME = json.dumps({"type": "eof"})


@dataclasses.dataclass(frozen=True)
class Tunnel:
    """How to reach one declared port of a sandbox, as Modal's `sb.tunnels()[port]`.

    `url` needs no header, like Modal's: `<server>/tunnels/<token>` (or
    `<scheme>://<token>.<SBX_WEB_DOMAIN>` when the server has a domain), where the token is
    unguessable and stops working when the sandbox ends. Anyone who has the URL reaches the
    port, so hand it out as you would a password. `host`/`port` name where a client connects
    for it (the service's address, or the tunnel's own host name). `authenticated_url` is
    the token-guarded route (`Authorization: Bearer` of the sandbox's owner, which the
    sandbox never sees). WebSockets pass through both. There is no raw socket to the
    sandbox: `tls_socket`/`tcp_socket` raise and point to `sb.forward_port()`."""

    sandbox_port: int
    url: str
    host: str
    port: int
    encrypted: bool
    connect_url: str  # the raw-TCP WebSocket (ws:// or wss://), for forward_port
    authenticated_url: str = ""

    @property
    def tls_socket(self) -> tuple[str, int]:
        raise E.InvalidRequestError(
            "sandboxes have no directly reachable socket here: use the HTTP proxy at "
            f"{self.url}, or sb.forward_port({self.sandbox_port}) for raw TCP")

    @property
    def tcp_socket(self) -> tuple[str, int]:
        return self.tls_socket

    @property
    def unencrypted_host(self) -> str:
        return self.host

    @property
    def unencrypted_port(self) -> int:
        return self.port


async def tunnels_of(client: _Client, sandbox_id: str, encrypted: list[int]) -> dict[int, Tunnel]:
    data = await client.request("GET", f"/v1/sandboxes/{sandbox_id}/tunnels")
    parts = urlsplit(client.url)
    ws_base = ("wss" if parts.scheme == "https" else "ws") + client.url[len(parts.scheme):]
    out = {}
    for t in data["tunnels"]:
        p = t["port"]
        path = f"/v1/sandboxes/{sandbox_id}/ports/{p}"
        url = t.get("url") or f"{client.url}/tunnels/{t['token']}"
        u = urlsplit(url)
        out[p] = Tunnel(sandbox_port=p, url=url, host=u.hostname or "127.0.0.1",
                        port=u.port or (443 if u.scheme == "https" else 80),
                        encrypted=p in encrypted, connect_url=ws_base + path + "/connect",
                        authenticated_url=client.url + path)
    return out


async def open_tunnel(client: _Client, sandbox_id: str, port: int) -> Any:
    """A connected WebSocket to `port` inside the sandbox (raises the server's typed error)."""
    ws = await client.websocket(f"/v1/sandboxes/{sandbox_id}/ports/{port}/connect")
    try:
        first = await ws.recv()
        frame = json.loads(first) if isinstance(first, str) else {}
    except Exception:
        await ws.close()
        raise E.ServerUnreachableError("the server closed the port tunnel before it was "
                                       "connected") from None
    if frame.get("type") != "connected":
        await ws.close()
        raise ws_error(frame) if frame.get("type") == "error" else E.SandboxError(
            f"unexpected first frame on the port tunnel: {str(frame)[:200]}")
    return ws


async def splice(ws: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy a local TCP connection to and from a connected tunnel, half-closes included,
    until both directions end or either side breaks."""
    from websockets.exceptions import ConnectionClosed

    async def up() -> None:
        while data := await reader.read(CHUNK):
            await ws.send(data)
        await ws.send(EOF_FRAME)

    up_task = asyncio.ensure_future(up())
    try:
        async for msg in ws:
            if isinstance(msg, bytes):
                writer.write(msg)
                await writer.drain()
                continue
            frame = json.loads(msg)
            if frame.get("type") == "eof" and writer.can_write_eof():
                writer.write_eof()
            elif frame.get("type") == "error":
                log.warning("port tunnel: %s", frame.get("message"))
                break
    except (ConnectionClosed, ConnectionError, OSError, ValueError):
        pass
    finally:
        up_task.cancel()
        with contextlib.suppress(BaseException):
            await up_task
        writer.close()
        with contextlib.suppress(Exception):
            await ws.close()


class _AsyncPortForward:
    """A local listener forwarding to one port of a sandbox. `local_port`, `close()`."""

    def __init__(self, client: _Client, sandbox_id: str, port: int):
        self._client = client
        self.sandbox_id = sandbox_id
        self.remote_port = port
        self.local_host = ""
        self.local_port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()

    async def _start(self, host: str, local_port: int) -> "_AsyncPortForward":
        self._server = await asyncio.start_server(self._accept, host, local_port)
        self.local_host, self.local_port = self._server.sockets[0].getsockname()[:2]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)  # type: ignore[arg-type]
        try:
            try:
                ws = await open_tunnel(self._client, self.sandbox_id, self.remote_port)
            except E.SandboxError as e:
                log.warning("port-forward to %s:%d: %s", self.sandbox_id, self.remote_port, e)
                writer.close()
                return
            await splice(ws, reader, writer)
        except asyncio.CancelledError:
            writer.close()  # close() cut it; end quietly (asyncio logs a cancelled handler)
        finally:
            self._conns.discard(task)  # type: ignore[arg-type]

    @property
    def address(self) -> str:
        return f"{self.local_host}:{self.local_port}"

    async def close(self) -> None:
        """Stop listening and cut the connections still open."""
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.serve_forever()

    def __repr__(self) -> str:
        return (f"_AsyncPortForward({self.address} -> {self.sandbox_id}:{self.remote_port})")


class PortForward(Wrapped, impl=_AsyncPortForward):
    """`sb.forward_port(port)`: connect to `pf.local_port` on this machine to reach `port`
    inside the sandbox. A context manager; `pf.close()` stops it."""

    def __enter__(self) -> "PortForward":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "PortForward":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close.aio()
