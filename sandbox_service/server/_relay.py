"""Requests made by code inside a function container, run through this app in-process
(server layer). The runner relays them over its connection; the principal (the
container's owner, scoped to its app) goes in the ASGI scope as `sbx.principal`, which no
network client can set, so no token ever enters a container.

- `http_relay(app)`: one request, one answer (`api` -> `api_resp` frames).
- `ws_relay(app)`: one WebSocket session (`ws_open`, then `ws_msg` both ways, `ws_close`
  from either end; `ws_opened` or `ws_refused` answer the open). Exec streams, port
  forwards and the interpreter use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from ..wire import errors as E

log = logging.getLogger("sbx.functions")

Emit = Callable[[dict, bytes], Awaitable[None]]


def http_relay(app: Any):
    import httpx

    async def relay(principal, method: str, path: str, content_type: str | None,
                    body: bytes) -> tuple[int, str, bytes]:
        async def as_container(scope, receive, send):
            await app({**scope, "sbx.principal": principal}, receive, send)

        transport = httpx.ASGITransport(app=as_container)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://container",
                                     timeout=None) as client:
            headers = {"content-type": content_type} if content_type else {}
            resp = await client.request(method, path, content=body, headers=headers)
        return resp.status_code, resp.headers.get("content-type", ""), resp.content
    return relay


def ws_relay(app: Any):
    async def relay(principal, path: str, inbox: asyncio.Queue, emit: Emit) -> None:
        """Run one WebSocket session. `inbox` holds the container's `(header, body)` frames
        (`ws_msg`, `ws_close`), or None when its connection is gone."""
        bare, _, query = path.partition("?")
        scope = {"type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "scheme": "ws", "path": bare,
                 "raw_path": bare.encode(), "query_string": query.encode(), "root_path": "",
                 "headers": [(b"host", b"container")], "client": ("container", 0),
                 "server": ("container", 80), "subprotocols": [], "sbx.principal": principal}
        state = {"connected": False, "closed": False, "status": 0}
        refusal: list[bytes] = []

        async def receive() -> dict:
            if not state["connected"]:
                state["connected"] = True
                return {"type": "websocket.connect"}
            item = await inbox.get()
            if item is None or item[0].get("t") != "ws_msg":
                inbox.put_nowait(None)  # every later receive() sees the end too
                code = int(item[0].get("code", 1000)) if item else 1006
                return {"type": "websocket.disconnect", "code": code}
            header, body = item
            if header.get("text"):
                return {"type": "websocket.receive", "text": body.decode("utf-8", "replace")}
            return {"type": "websocket.receive", "bytes": body}

        async def send(msg: dict) -> None:
            kind = msg["type"]
            if state["closed"]:
                return
            if kind == "websocket.accept":
                await emit({"t": "ws_opened"}, b"")
            elif kind == "websocket.send":
                if msg.get("text") is not None:
                    await emit({"t": "ws_msg", "text": True}, msg["text"].encode())
                else:
                    await emit({"t": "ws_msg", "text": False}, msg.get("bytes") or b"")
            elif kind == "websocket.close":
                state["closed"] = True
                await emit({"t": "ws_close", "code": int(msg.get("code") or 1000)}, b"")
            elif kind == "websocket.http.response.start":  # refused before accept
                state["status"] = int(msg.get("status", 403))
            elif kind == "websocket.http.response.body":
                refusal.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    state["closed"] = True
                    await emit({"t": "ws_refused", "status": state["status"]}, b"".join(refusal))

        try:
            await app(scope, receive, send)
        except Exception as e:  # the container's connection went, or the route failed
            log.debug("relayed WebSocket %s ended: %s", bare, e)
        if not state["closed"]:
            state["closed"] = True
            body = json.dumps(E.SandboxError("the stream ended in the server").to_wire()).encode()
            try:
                await emit({"t": "ws_close", "code": 1011}, body)
            except Exception:
                pass
    return relay
