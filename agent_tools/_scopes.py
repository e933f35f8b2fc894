"""Who created what (agent-tools layer): a `Scope` per MCP session (or, for session-less
callers, per token) remembers the sandboxes it made (contexts die with them), so they
are destroyed when the session ends, when it sits idle too long, or when its token stops
being valid. Sandboxes also carry a server-side idle timeout, so they end even if this
process dies. Must not import `mcp`, the server or a runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger("sbx.agent_tools")

# terminate(sandbox_ids, token) -> None; the caller decides with which credential
Terminator = Callable[[list[str], "str | None"], Awaitable[None]]


class Scope:
    def __init__(self, key: str, token: str | None):
        self.key = key
        self.token = token
        self.sandboxes: set[str] = set()
        self.last_used = time.monotonic()

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def adopt(self, sandbox_id: str) -> None:
        self.sandboxes.add(sandbox_id)

    def forget(self, sandbox_id: str) -> None:
        self.sandboxes.discard(sandbox_id)


class ScopeRegistry:
    """All live scopes. `close(key)` ends one now; `sweep()` ends the idle ones and those
    whose token `token_valid` rejects; `run_reaper()` sweeps every `interval_s`."""

    def __init__(self, terminate: Terminator, *, idle_s: float = 1800,
                 token_valid: Callable[[str | None], Awaitable[bool]] | None = None):
        self._terminate = terminate
        self._token_valid = token_valid
        self.idle_s = idle_s
        self.scopes: dict[str, Scope] = {}

    def get(self, key: str, token: str | None) -> Scope:
        scope = self.scopes.get(key)
        if scope is None:
            scope = self.scopes[key] = Scope(key, token)
        scope.token = token  # the latest credential this scope was used with
        scope.touch()
        return scope

    async def close(self, key: str) -> None:
        scope = self.scopes.pop(key, None)
        if scope is None or not scope.sandboxes:
            return
        ids = sorted(scope.sandboxes)
        scope.sandboxes.clear()
        log.info("agent tools: scope %s ended; terminating %s", key[:24], ", ".join(ids))
        try:
            await self._terminate(ids, scope.token)
        except Exception:  # cleanup must never take the caller down
            log.exception("terminating the sandboxes of scope %s", key[:24])

    async def close_all(self) -> None:
        for key in list(self.scopes):
            await self.close(key)

    async def sweep(self) -> None:
        now = time.monotonic()
        for key, scope in list(self.scopes.items()):
            expired = now - scope.last_used > self.idle_s
            if not expired and self._token_valid is not None:
                expired = not await self._token_valid(scope.token)
            if expired:
                await self.close(key)

    async def run_reaper(self, interval_s: float = 30) -> None:
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(Exception):
                await self.sweep()
