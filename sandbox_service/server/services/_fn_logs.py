"""The output of an app's function containers, as one stream per app (server layer).

Each container's stdout and stderr are the log files `SandboxManager` writes for a main
command; a follower per container reads what they gain (every 0.2 s) into the app's ring
of recent entries (`MAX_ENTRIES`), which `sbx run` and `sbx app logs` read with a cursor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from typing import Any

MAX_ENTRIES = 10000
POLL_S = 0.2
PARTIAL_S = 1.0          # a line with no newline yet is shipped after this long
MAX_PARTIAL = 64 << 10
TAIL_BYTES = 4000


class _Ring:
    def __init__(self) -> None:
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_ENTRIES)
        self.next_seq = 0
        self.cond = asyncio.Condition()


class AppLogs:
    def __init__(self, manager: Any):
        self.manager = manager
        self.rings: dict[str, _Ring] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def follow(self, app_id: str, sandbox_id: str) -> None:
        ring = self.rings.setdefault(app_id, _Ring())
        self.tasks[sandbox_id] = asyncio.create_task(self._follow(ring, sandbox_id))

    async def _follow(self, ring: _Ring, sid: str) -> None:
        offsets = {"stdout": 0, "stderr": 0}
        # a line's bytes wait for its newline (a print is one entry, never split between
        # polls, nor a UTF-8 character); a partial line goes after PARTIAL_S or at the end
        pending = {"stdout": b"", "stderr": b""}
        since = {"stdout": 0.0, "stderr": 0.0}
        try:
            while True:
                live = self.manager.is_live(sid)
                now = time.monotonic()
                got = False
                for stream in offsets:
                    data = await asyncio.to_thread(self._read, sid, stream, offsets[stream])
                    offsets[stream] += len(data)
                    if data and not pending[stream]:
                        since[stream] = now
                    buf = pending[stream] + data
                    cut = buf.rfind(b"\n") + 1
                    if not live or now - since[stream] >= PARTIAL_S or len(buf) > MAX_PARTIAL:
                        cut = len(buf)
                    pending[stream] = buf[cut:]
                    if pending[stream]:
                        since[stream] = since[stream] if cut == 0 else now
                    if cut:
                        got = True
                        ring.entries.append({"seq": ring.next_seq, "container_id": sid,
                                             "stream": stream,
                                             "data": buf[:cut].decode("utf-8", "replace")})
                        ring.next_seq += 1
                if got:
                    async with ring.cond:
                        ring.cond.notify_all()
                if not live and not got:
                    return
                await asyncio.sleep(POLL_S)
        finally:
            self.tasks.pop(sid, None)

    def _read(self, sid: str, stream: str, offset: int) -> bytes:
        try:
            with open(self.manager.log_path(sid, stream), "rb") as f:
                f.seek(offset)
                return f.read(1 << 20)
        except FileNotFoundError:
            return b""

    def tail(self, sid: str) -> str:
        parts = []
        for stream in ("stdout", "stderr"):
            try:
                with open(self.manager.log_path(sid, stream), "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - TAIL_BYTES))
                    text = f.read().decode("utf-8", "replace").strip()
            except FileNotFoundError:
                text = ""
            if text:
                parts.append(text)
        return "\n".join(parts)[-TAIL_BYTES:]

    async def wait(self, app_id: str, after_seq: int, timeout_s: float) -> None:
        """Until the app has an entry at or after `after_seq`, or `timeout_s`."""
        ring = self.rings.setdefault(app_id, _Ring())
        if ring.next_seq <= after_seq and timeout_s > 0:
            async with ring.cond:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ring.cond.wait_for(
                        lambda: ring.next_seq > after_seq), timeout_s)

    async def entries(self, app_id: str, after_seq: int,
                      timeout_s: float) -> tuple[list[dict[str, Any]], int]:
        await self.wait(app_id, after_seq, timeout_s)
        ring = self.rings.setdefault(app_id, _Ring())
        out = [e for e in ring.entries if e["seq"] >= after_seq]
        return out, ring.next_seq

    def close(self) -> None:
        for t in list(self.tasks.values()):
            t.cancel()
