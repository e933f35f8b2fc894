"""WebSockets through the port proxy (server layer): a client's WebSocket to a declared port
reaches the WebSocket server inside the sandbox.

ASGI hands the server WebSocket messages, not bytes, so the bridge is a WebSocket client of
the sandbox's server over the agent's byte stream (`port_stream`), written with the sans-I/O
protocol of `websockets`: the upgrade request carries the client's path, query, subprotocols
and headers (minus hop-by-hop ones and, on the token-guarded route, this service's bearer
token); the client's WebSocket is accepted only once the server inside accepted, with the
subprotocol it chose; then messages flow both ways and a close on either side closes the
other with its code. A refused upgrade (no WebSocket server there) closes the client's
WebSocket with 1011 and the reason. Must not import a runtime backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket, WebSocketDisconnect
from websockets.client import ClientProtocol
from websockets.frames import Close, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from ...wire import errors as E
from ._ports import CHUNK, target_of

log = logging.getLogger("sbx.server.ports")

HANDSHAKE_TIMEOUT_S = 30.0
_SKIP = {"host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
         "sec-websocket-extensions", "sec-websocket-protocol", "content-length",
         "transfer-encoding", "keep-alive", "te", "trailer", "proxy-authorization"}


async def bridge(ws: WebSocket, sandbox_id: str, port: int, *, prefix: str, path: str,
                 keep_auth: bool) -> None:
    """Connect `ws` (not yet accepted) to the WebSocket server on `port` inside the sandbox."""
    mgr = ws.app.state.manager
    target = target_of(ws.scope, prefix, path).decode("latin-1")
    subprotocols = [s.strip() for s in ws.headers.get("sec-websocket-protocol", "").split(",")
                    if s.strip()]
    proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{target}"),
                           subprotocols=subprotocols or None, max_size=None)
    request = proto.connect()
    for k, v in ws.headers.items():
        if k.lower() in _SKIP or (k.lower() == "authorization" and not keep_auth):
            continue
        request.headers[k] = v
    try:
        async with mgr.port_stream(sandbox_id, port) as (reader, writer):
            proto.send_request(request)
            writer.write(b"".join(proto.data_to_send()))
            await writer.drain()
            response = await asyncio.wait_for(_handshake(proto, reader), HANDSHAKE_TIMEOUT_S)
            if proto.handshake_exc is not None or response is None:
                why = f"{response.status_code} {response.reason_phrase}" if response \
                    else str(proto.handshake_exc or "no answer")
                await refuse(ws, 1011, f"the server on port {port} refused the WebSocket "
                              f"upgrade ({why})")
                return
            await ws.accept(subprotocol=response.headers.get("Sec-WebSocket-Protocol"))
            await _pump(ws, proto, reader, writer)
    except (E.SandboxError, asyncio.TimeoutError, ConnectionError, OSError) as e:
        reason = e.message if isinstance(e, E.SandboxError) else (
            f"the server on port {port} did not answer the upgrade" if isinstance(
                e, asyncio.TimeoutError) else f"connection to port {port} failed: {e}")
        await refuse(ws, 1008 if isinstance(e, E.NotFoundError) else 1011, reason)


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with `code` and `reason`: a client sees why (a close before the
    accept would be a bare HTTP 403)."""
    with contextlib.suppress(Exception):
        await ws.accept()
        await ws.close(code=code, reason=reason[:120])


async def _handshake(proto: ClientProtocol, reader: asyncio.StreamReader) -> Response | None:
    while True:
        for event in proto.events_received():
            if isinstance(event, Response):
                return event
        if proto.handshake_exc is not None:  # not an HTTP/1.1 answer at all
            return None
        data = await reader.read(CHUNK)
        if not data:
            proto.receive_eof()
            return None
        proto.receive_data(data)


async def _pump(ws: WebSocket, proto: ClientProtocol, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    async def flush() -> None:
        data = b"".join(proto.data_to_send())
        if data:
            writer.write(data)
            await writer.drain()

    async def client_to_sandbox() -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    proto.send_close(msg.get("code") or 1000)
                    await flush()
                    return
                if msg.get("text") is not None:
                    proto.send_text(msg["text"].encode())
                elif msg.get("bytes") is not None:
                    proto.send_binary(msg["bytes"])
                await flush()
        except (WebSocketDisconnect, RuntimeError):
            return

    async def sandbox_to_client() -> None:
        parts: list[bytes] = []
        kind: Opcode | None = None
        while True:
            data = await reader.read(CHUNK)
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            for frame in proto.events_received():
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    kind, parts = frame.opcode, [frame.data]
                elif frame.opcode == Opcode.CONT:
                    parts.append(frame.data)
                elif frame.opcode == Opcode.CLOSE:
                    close = Close.parse(frame.data) if frame.data else None
                    await flush()  # the close answer
                    await ws.close(code=close.code if close else 1000,
                                   reason=close.reason if close else "")
                    return
                else:  # PING / PONG: the protocol answers pings itself
                    continue
                if frame.fin and kind is not None:
                    body = b"".join(parts)
                    if kind == Opcode.TEXT:
                        await ws.send_text(body.decode())
                    else:
                        await ws.send_bytes(body)
                    kind, parts = None, []
            await flush()
            if not data:
                await ws.close(code=1011, reason="the server inside closed the connection")
                return

    tasks = [asyncio.ensure_future(client_to_sandbox()), asyncio.ensure_future(sandbox_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await ws.close()

