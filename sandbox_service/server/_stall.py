"""Clients that stop reading lose their stream (server layer; plain ASGI, no FastAPI).

Output flows agent -> server -> client with back-pressure at each hop: a response or
WebSocket message is sent only when the client's socket takes it, and the agent's next
frame is read only after that. A client that never reads would so hold its handler, the
agent stream behind it and up to ~192 KiB of buffers forever. `StallGuard` bounds that in
time: a send that waits longer than `stall_s` for the client ends the request, and the
connection is aborted (a close would wait for the unread data to drain, which never
happens). Ending an exec stream this way kills its command, as a disconnect does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

log = logging.getLogger("sbx.server.stall")

Scope = dict[str, Any]
Message = dict[str, Any]


class ClientStalled(OSError):
    """The client read nothing for too long (an OSError: Starlette treats it as a
    disconnect)."""


def _abort(send: Callable[[Message], Awaitable[None]]) -> None:
    """Drop the connection without flushing. The ASGI send of uvicorn's HTTP and WebSocket
    protocols is a bound method of an object holding the asyncio transport."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()


class StallGuard:
    def __init__(self, app: Callable, stall_s: float = 60.0):
        self.app = app
        self.stall_s = stall_s

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        stalled = False

        async def guarded(message: Message) -> None:
            nonlocal stalled
            if stalled:
                raise ClientStalled("the client stopped reading")
            try:
                await asyncio.wait_for(send(message), self.stall_s)
            except asyncio.TimeoutError:
                stalled = True
                log.info("%s %s: the client read nothing for %gs: connection dropped",
                         scope["type"], scope.get("path"), self.stall_s)
                _abort(send)
                raise ClientStalled(f"the client read nothing for {self.stall_s:g}s") from None

        try:
            await self.app(scope, receive, guarded)
        except Exception:
            if not stalled:
                raise  # after a stall, whatever the handler raised is about the stall
