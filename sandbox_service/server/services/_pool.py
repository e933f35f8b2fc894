"""Warm pool: sandboxes booted ahead of time and handed out on `create` (server layer).

A pooled sandbox runs the base image with the default limits and has never been seen by
anyone; taking one removes it from the pool for good (single use), and a replacement boots
in the background. The caller's env is applied through the agent, workdir/command/timeouts
are applied by the manager as for any sandbox. Requests with other images or limits boot
cold. Must not import FastAPI or a concrete runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable

from runtimes import ContainerSpec, Runtime

from ...wire import new_id

log = logging.getLogger("sbx.server.pool")
REFILL_DELAY_S = 0.25


class WarmPool:
    def __init__(self, runtime: Runtime, size: int, spec_for: Callable[[str, Any], ContainerSpec]):
        self.runtime = runtime
        self.size = max(0, size)
        self._spec_for = spec_for  # (container_id, image) -> ContainerSpec with defaults
        self._ready: dict[str, Any] = {}  # container id -> image it booted
        self._disk: dict[str, int | None] = {}  # container id -> its disk quota (MiB)
        self._booting: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    def ids(self) -> set[str]:
        """Containers the pool owns (the collector must leave them alone)."""
        return set(self._ready) | set(self._booting)

    def refill(self, image: Any, delay_s: float = 0.0) -> None:
        if self._closed:
            return
        for _ in range(self.size - len(self._ready) - len(self._booting)):
            cid = new_id("sandbox")
            self._booting.add(cid)
            task = asyncio.create_task(self._boot(cid, image, delay_s), name=f"sbx-pool-{cid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _boot(self, cid: str, image: Any, delay_s: float) -> None:
        try:
            await asyncio.sleep(delay_s)  # let the caller's first exec have the CPU
            spec = self._spec_for(cid, image)
            await self.runtime.create(spec)
        except Exception as e:  # a failed boot just leaves the pool smaller; create goes cold
            log.warning("warm pool: boot failed: %s", e)
            self._booting.discard(cid)
            return
        except asyncio.CancelledError:
            self._booting.discard(cid)
            await self.runtime.destroy(cid)
            raise
        self._booting.discard(cid)
        if self._closed:
            await self.runtime.destroy(cid)
        else:
            self._ready[cid] = image
            self._disk[cid] = spec.disk_mib

    def take(self, image: Any, disk_mib: int | None) -> str | None:
        """A booted, never-used container for `image` with a disk of `disk_mib` MiB (None:
        writes in memory), or None. Synchronous on purpose: the caller registers the id
        before its next await, so the collector never sees it unowned."""
        cid = next((c for c, img in self._ready.items() if img.image_id == image.image_id
                    and self._disk.get(c) == disk_mib), None)
        if cid is not None:
            del self._ready[cid]
            self._disk.pop(cid, None)
        self.refill(image, delay_s=REFILL_DELAY_S)
        return cid

    async def close(self) -> None:
        """Destroy the pool (its sandboxes belong to nobody, so they never outlive it)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for cid in list(self._ready):
            await self.runtime.destroy(cid)
        self._ready.clear()
        self._disk.clear()
