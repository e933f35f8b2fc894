"""Printing an app's container output while it runs (public layer): `with app.run():` and
`sbx run` follow `/v1/apps/{id}/logs` and copy each container's stdout and stderr to this
process's, as Modal does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from ._sync import LOOP
from .wire import errors as E


class _Follower:
    def __init__(self, app: Any):
        self.app = app
        self.task = asyncio.run_coroutine_threadsafe(self._run(), LOOP.loop)
        self.seq = 0

    async def _run(self) -> None:
        from ._client import default_client

        client = self.app._client or default_client()
        while True:
            try:
                page = await client.request("GET", f"/v1/apps/{self.app.app_id}/logs",
                                            params={"after_seq": self.seq, "timeout_s": 20},
                                            timeout=50)
            except asyncio.CancelledError:
                raise
            except E.SandboxError:
                await asyncio.sleep(1.0)
                continue
            self._print(page["entries"])
            self.seq = page["next_seq"]

    def _print(self, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            out = sys.stderr if e["stream"] == "stderr" else sys.stdout
            out.write(e["data"])
            out.flush()

    async def stop(self) -> None:
        # one last look, so output printed just before the block ended is not lost
        from ._client import default_client

        self.task.cancel()
        with contextlib.suppress(Exception):
            client = self.app._client or default_client()
            await asyncio.sleep(0.3)
            page = await client.request("GET", f"/v1/apps/{self.app.app_id}/logs",
                                        params={"after_seq": self.seq, "timeout_s": 0})
            self._print(page["entries"])


def follow_logs(app: Any) -> _Follower:
    return _Follower(app)
