"""A streaming response that owns its cleanup (server layer; no runtime imports).

A StreamingResponse's body generator runs its own `finally` only once it has started, and a
BackgroundTask runs only after a successful send: a client that leaves while the head is
being sent can skip both. Streams that hold an agent connection or keep a sandbox busy use
this instead, so their cleanup runs however the response ends.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi.responses import StreamingResponse


class OwnedStreamingResponse(StreamingResponse):
    def __init__(self, content: Any, *, cleanup: Callable[[], Awaitable[Any]], **kw: Any):
        super().__init__(content, **kw)
        self._cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()
