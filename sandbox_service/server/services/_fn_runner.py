"""One function container as the server sees it (server layer): its sandbox and the one
connection to the function runner inside it.

The connection is a byte stream to the runner's loopback port through the container's
agent (`Runtime.open_port`), so it needs no network. Frames are `wire.encode_frame`'s:
the server sends `init`, `input`, `cancel`, `stop` and `api_resp`; the runner sends
`ready` / `init_failed`, `out`, `item`, `api` and `stopped`. WebSockets the user's code
opens travel as `ws_open`, `ws_msg`, `ws_close` (both ways) and `ws_opened` / `ws_refused`
(see server/_relay.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from ...wire import MAX_HEADER, MAX_PAYLOAD_BYTES, RUNNER_PORT, encode_frame
from ._fn_calls import InputRef

log = logging.getLogger("sbx.functions")

RUNNER_BOOT = ("import sys; sys.path[:0] = ['/.sbx/sdk']; sys.path.append('/.sbx/sdk-deps'); "
               "from sandbox_service._runner import main; main()")
CONNECT_RETRY_S = 0.02  # a refused connect costs one agent round trip (a few ms)


class RunnerGone(Exception):
    """The runner's connection ended (the container exited or was stopped)."""


class RunnerConn:
    def __init__(self, sandbox_id: str, *, max_load: int):
        self.sandbox_id = sandbox_id
        self.max_load = max_load
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.state = "starting"          # starting, ready, stopping, dead
        self.inflight: dict[str, InputRef] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.started_at = time.time()
        self.idle_since = time.monotonic()
        self.served = 0
        self.retire = False              # single-use: stop after the current input
        self.wlock = asyncio.Lock()
        self.read_task: asyncio.Task | None = None
        self.streams: dict[int, asyncio.Queue] = {}  # relayed WebSockets: wid -> inbox
        self.web_active = 0                          # web requests being served here
        self.asgi: dict[int, asyncio.Queue] = {}     # web requests: rid -> the app's frames
        self.next_rid = 0
        self.calls: set[asyncio.Task] = set()        # its relayed API calls and streams

    @property
    def load(self) -> int:
        return len(self.inflight) + self.web_active

    @property
    def free(self) -> int:
        return 0 if self.state != "ready" or self.retire else self.max_load - self.load

    async def connect(self, open_port: Callable[..., Awaitable[Any]], deadline: float,
                      alive: Callable[[], Awaitable[bool]]) -> None:
        """Connect to the runner's port, retrying while it starts."""
        delay = CONNECT_RETRY_S
        while True:
            try:
                self.reader, self.writer = await open_port(self.sandbox_id, RUNNER_PORT)
                return
            except Exception as e:  # refused while python starts, or the container died
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the function runner did not start in time ({e})") from None
                if not await alive():
                    raise RunnerGone("the container exited before its runner started") from None
            await asyncio.sleep(delay)

    async def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        if self.writer is None or self.state == "dead":
            raise RunnerGone("not connected")
        async with self.wlock:
            try:
                self.writer.write(encode_frame(header, body))
                await self.writer.drain()
            except (ConnectionError, OSError) as e:
                raise RunnerGone(str(e)) from None

    async def recv(self) -> tuple[dict[str, Any], bytes]:
        assert self.reader is not None
        try:
            n = int.from_bytes(await self.reader.readexactly(4), "big")
            if n > MAX_HEADER:
                raise RunnerGone(f"the runner sent a {n}-byte header")
            header = json.loads(await self.reader.readexactly(n))
            m = int.from_bytes(await self.reader.readexactly(4), "big")
            if m > MAX_PAYLOAD_BYTES + 1024:
                raise RunnerGone(f"the runner sent a {m}-byte payload; the limit is "
                                 f"{MAX_PAYLOAD_BYTES}")
            body = await self.reader.readexactly(m) if m else b""
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            raise RunnerGone(str(e) or "closed") from None
        except ValueError as e:
            raise RunnerGone(f"bad frame from the runner: {e}") from None
        if not isinstance(header, dict):
            raise RunnerGone("bad frame from the runner")
        return header, body

    def track(self, task: asyncio.Task) -> None:
        """A relayed call of this container: cancelled when the container goes (a
        blocking Queue.get of a dead container must not take an item later)."""
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    def close(self) -> None:
        self.state = "dead"
        for task in list(self.calls):
            if task is not asyncio.current_task():
                task.cancel()
        for inbox in (*self.streams.values(), *self.asgi.values()):
            inbox.put_nowait(None)  # their sessions and requests end
        for t in self.timers.values():
            t.cancel()
        self.timers.clear()
        if self.writer is not None:
            self.writer.close()
        if self.read_task is not None and self.read_task is not asyncio.current_task():
            self.read_task.cancel()
