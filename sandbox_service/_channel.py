"""The SDK's transport inside a function container (public layer, async): HTTP requests and
WebSockets travel to the server as frames on the function runner's one connection, so code
in a container reaches the service with no network and no token; the server runs them as
the container's identity (its owner, scoped to its app).

`runner` is the `_runner.Runner` of this process. Its read thread hands each reply frame to
the callback registered for its request (`rid`) or WebSocket (`wid`); the callbacks move
it onto the caller's event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

_CLOSED = object()


def channel_transport(runner: Any) -> "httpx.AsyncBaseTransport":
    """An httpx transport whose requests are `api` frames answered by `api_resp`."""
    import httpx

    class ChannelTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            body = await request.aread()
            loop = asyncio.get_running_loop()
            fut: asyncio.Future = loop.create_future()

            def on_reply(header: dict, data: bytes) -> None:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result((header, data)))

            header = {"method": request.method, "path": request.url.raw_path.decode("ascii"),
                      "content_type": request.headers.get("content-type")}
            runner.api_call(header, body, on_reply)
            reply, data = await fut
            return httpx.Response(int(reply.get("status", 502)),
                                  headers={"content-type": reply.get("content_type") or
                                           "application/octet-stream"}, content=data)
    return ChannelTransport()


class ChannelWebSocket:
    """The part of a `websockets` client connection the SDK uses (send, recv, async
    iteration, close), over the runner's connection: `ws_open` -> `ws_opened` (or
    `ws_refused`), then `ws_msg` both ways, and `ws_close` from either end."""

    def __init__(self, runner: Any, path: str):
        self._runner = runner
        self._path = path
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._opened: asyncio.Future = self._loop.create_future()
        self._closed = False
        self.wid = 0

    def _on_frame(self, header: dict, body: bytes) -> None:  # the runner's read thread
        self._loop.call_soon_threadsafe(self._deliver, header, body)

    def _deliver(self, header: dict, body: bytes) -> None:
        kind = header.get("t")
        if kind == "ws_opened":
            self._opened.done() or self._opened.set_result(None)
        elif kind == "ws_refused":
            self._opened.done() or self._opened.set_exception(_refusal(header, body))
            self._finish()
        elif kind == "ws_msg":
            self._inbox.put_nowait(body.decode("utf-8", "replace") if header.get("text")
                                   else body)
        elif kind == "ws_close":
            if not self._opened.done():
                self._opened.set_exception(_refusal(header, body))
            self._inbox.put_nowait(_CLOSED)
            self._finish()

    def _finish(self) -> None:
        self._closed = True
        self._runner.ws_done(self.wid)

    async def _open(self) -> "ChannelWebSocket":
        self.wid = self._runner.ws_open(self._path, self._on_frame)
        try:
            await self._opened
        except BaseException:  # refused, or the caller gave up: the server's side ends too
            if not self._closed:
                self._runner.send({"t": "ws_close", "wid": self.wid, "code": 1000})
                self._finish()
            raise
        return self

    async def send(self, message: str | bytes) -> None:
        if self._closed:
            raise _connection_closed()
        text = isinstance(message, str)
        data = message.encode() if isinstance(message, str) else bytes(message)
        header = {"t": "ws_msg", "wid": self.wid, "text": text}
        if len(data) > 65536:  # a big frame may block on the socket: not on the loop
            await self._loop.run_in_executor(None, self._runner.send, header, data)
        else:
            self._runner.send(header, data)

    async def recv(self) -> str | bytes:
        item = await self._inbox.get()
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # later recv() calls raise too
            raise _connection_closed()
        return item

    def __aiter__(self):
        return self

    async def __anext__(self) -> str | bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._closed:
            self._runner.send({"t": "ws_close", "wid": self.wid, "code": code})
            self._inbox.put_nowait(_CLOSED)
            self._finish()


async def channel_websocket(runner: Any, path: str) -> ChannelWebSocket:
    return await ChannelWebSocket(runner, path)._open()


def _connection_closed() -> Exception:
    from websockets.exceptions import ConnectionClosedOK

    return ConnectionClosedOK(None, None)


def _refusal(header: dict, body: bytes) -> Exception:
    from .wire import errors as E

    try:
        return E.error_from_wire(int(header.get("status", 0)), json.loads(body))
    except (ValueError, TypeError):
        return E.ServerUnreachableError(
            f"the server refused the stream ({header.get('status') or 'closed'}): "
            f"{body[:200]!r}")
