"""Output readers and the stdin writer (public layer, async implementation).

Each output stream has its own incremental UTF-8 decoder with errors="replace": binary or
split multi-byte output never raises (Modal's strict decoding does) and never loses bytes
at chunk boundaries. Readers iterate by chunk, or by line when bufsize=1.
Unread output is buffered in the client process, never in the server.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import threading
from typing import Any, AsyncIterator, Awaitable, Callable

from ._sync import Wrapped


class _AsyncStreamReader:
    def __init__(self, *, text: bool = True, by_line: bool = False,
                 source: Callable[["_AsyncStreamReader"], Awaitable[None]] | None = None):
        self._text = text
        self._by_line = by_line
        self._chunks: collections.deque[bytes] = collections.deque()
        self._closed = False
        self._error: BaseException | None = None
        self._event = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._source = source  # lazy producer (sandbox logs): started on first read
        self._source_task: asyncio.Task | None = None

    # producer side (called on the SDK loop)
    def _feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._event.set()

    def _close(self, error: BaseException | None = None) -> None:
        self._closed = True
        self._error = self._error or error
        self._event.set()

    def _ensure_source(self) -> None:
        if self._source is not None and self._source_task is None:
            self._source_task = asyncio.ensure_future(self._source(self))

    async def _next_raw(self) -> bytes | None:
        self._ensure_source()
        while not self._chunks:
            if self._closed:
                if self._error is not None:
                    raise self._error
                return None
            self._event.clear()
            await self._event.wait()
        return self._chunks.popleft()

    def _decode(self, data: bytes, final: bool = False) -> Any:
        return self._decoder.decode(data, final) if self._text else data

    async def read(self) -> Any:
        """Everything until the stream ends (the command exits)."""
        parts = []
        while (data := await self._next_raw()) is not None:
            parts.append(self._decode(data))
        parts.append(self._decode(b"", final=True))
        return ("" if self._text else b"").join(parts)

    async def _iterate(self) -> AsyncIterator[Any]:
        empty = "" if self._text else b""
        nl = "\n" if self._text else b"\n"
        pending = empty
        while True:
            data = await self._next_raw()
            chunk = self._decode(data if data is not None else b"", final=data is None)
            if not self._by_line:
                if chunk:
                    yield chunk
            else:
                pending += chunk
                while (i := pending.find(nl)) >= 0:
                    yield pending[:i + 1]
                    pending = pending[i + 1:]
            if data is None:
                if pending:
                    yield pending
                return

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate().__aiter__()


class _AsyncStreamWriter:
    """stdin of a process. `write` buffers (thread-safe, callable from sync code) and starts
    sending at once; `drain` waits until everything written so far has been sent."""

    def __init__(self, send: Callable[[bytes | None], Awaitable[None]],
                 loop: asyncio.AbstractEventLoop, text: bool):
        self._send = send  # bytes -> stdin frame, None -> EOF
        self._loop = loop
        self._text = text
        self._lock = threading.Lock()
        self._pending: list[bytes | None] = []
        self._eof = False
        self._flush_lock = asyncio.Lock()
        self._error: Exception | None = None

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"stdin.write takes str or bytes, not {type(data).__name__}")
        with self._lock:
            if self._eof:
                raise ValueError("stdin is closed (write_eof was called)")
            self._pending.append(bytes(data))
        self._schedule()

    def write_eof(self) -> None:
        with self._lock:
            if self._eof:
                return
            self._eof = True
            self._pending.append(None)
        self._schedule()

    def _schedule(self) -> None:
        def start() -> None:
            asyncio.ensure_future(self._flush())
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            start()
        else:
            self._loop.call_soon_threadsafe(start)

    async def _flush(self) -> None:
        async with self._flush_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    item = self._pending.pop(0)
                try:
                    await self._send(item)
                except Exception as e:  # kept for drain(), which raises it
                    self._error = e
                    return

    async def drain(self) -> None:
        """Wait until everything written has been sent; raise what a send raised."""
        await self._flush()
        err, self._error = self._error, None
        if err is not None:
            raise err


class StreamReader(Wrapped, impl=_AsyncStreamReader):
    """Output of a process: `read()`, or iterate (`for chunk in r`, `async for line in r`)."""


class StreamWriter(Wrapped, impl=_AsyncStreamWriter):
    """stdin of a process: `write(data)`, `write_eof()`, `drain()`."""
