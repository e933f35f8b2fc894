"""Inbound ports: raw TCP over a WebSocket, for protocols that are not plain HTTP (server
layer). `sb.forward_port()` and `sbx sandbox port-forward` open a local listener and
tunnel each accepted connection through this route.

WebSocket /v1/sandboxes/{id}/ports/{port}/connect (bearer token in the Authorization
header, like the exec WebSocket; never in the URL):
  server -> client  text   {"type": "connected"} once the sandbox side is connected,
                           {"type": "eof"} when the server inside closed its sending side,
                           {"type": "error", "code", "message"} and close (port not
                           declared: not_found; nothing listens: port_unreachable, ...)
                    binary bytes from the port inside the sandbox
  client -> server  binary bytes to the port;  text {"type": "eof"}: half-close
The WebSocket closes (1000) when both directions have ended. Must not import a runtime
backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ...wire import errors as E
from .. import _access as access
from ._exec_ws import _send_error
from ._ports import CHUNK, port_number

ports_ws_router = APIRouter()
EOF_FRAME = json.dumps({"type": "eof"})


@ports_ws_router.websocket("/v1/sandboxes/{sandbox_id}/ports/{port}/connect")
async def port_connect(ws: WebSocket, sandbox_id: str, port: str) -> None:
    await ws.accept()
    audit = ws.app.state.audit
    try:
        principal = await access.authenticate(ws)
    except E.SandboxError as e:
        await _send_error(ws, e)
        return
    try:
        port_number(port)
        await access.authorize(ws, principal)
    except E.SandboxError as e:
        if audit is not None:
            audit.record(principal.name, "port.connect", sandbox_id, e.http_status, port=port[:20])
        await _send_error(ws, e)
        return
    mgr = ws.app.state.manager
    try:
        async with mgr.port_stream(sandbox_id, int(port)) as (reader, writer):
            if audit is not None:
                audit.record(principal.name, "port.connect", sandbox_id, 200, port=int(port))
            await ws.send_text(json.dumps({"type": "connected"}))
            await _pump(ws, mgr, sandbox_id, reader, writer)
    except E.SandboxError as e:
        if audit is not None:
            audit.record(principal.name, "port.connect", sandbox_id, e.http_status, port=int(port))
        await _send_error(ws, e)
    except (WebSocketDisconnect, RuntimeError):
        pass


async def _pump(ws: WebSocket, mgr, sandbox_id: str, reader, writer) -> None:
    up = asyncio.create_task(_client_to_sandbox(ws, writer))
    try:
        while data := await reader.read(CHUNK):
            await ws.send_bytes(data)
        if not mgr.is_live(sandbox_id):  # the agent connection died with the sandbox
            raise await mgr.interrupted(sandbox_id)
        if up.done() and up.result() == "gone":
            return
        await ws.send_text(EOF_FRAME)
        if await up == "eof":  # both directions ended
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
    except (ConnectionError, OSError):
        if not mgr.is_live(sandbox_id):
            raise await mgr.interrupted(sandbox_id) from None
        raise E.PortUnreachableError(f"the connection to port inside sandbox {sandbox_id} "
                                     "broke") from None
    finally:
        if not up.done():
            up.cancel()
        with contextlib.suppress(BaseException):
            await up


async def _client_to_sandbox(ws: WebSocket, writer) -> str:
    """Returns "eof" after the client's half-close, "gone" when the client left (or the
    sandbox side broke) without one."""
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is not None:
                if data:
                    writer.write(data)
                    await writer.drain()
                continue
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(msg.get("text") or "").get("type") == "eof":
                    if writer.can_write_eof():
                        writer.write_eof()
                    return "eof"
    except (WebSocketDisconnect, RuntimeError, ConnectionError, OSError):
        pass
    writer.close()  # the client vanished: drop the sandbox side as well
    return "gone"
