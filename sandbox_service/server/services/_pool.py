"""Warm pools: sandboxes booted ahead of time, per profile, handed out on `create` (server
layer).

A profile is what a sandbox is booted with and cannot change later: (image, memory, cpu,
disk). A pooled sandbox has no network, no volumes and no GPU, and has never been seen by
anyone; taking one removes it from the pool for good (single use). The caller's env is
applied through the agent; workdir, command and timeouts by the manager, as for any
sandbox.

Sizing, from recent demand:
- the default profile (the base image at the default limits) always keeps `size`
  (SBX_WARM_POOL) ready;
- any other profile created at least MIN_DEMAND times in the last DEMAND_WINDOW_S keeps as
  many ready as were created with it in that window (a batch of 10 gets up to 10), and
  none once it has not been asked for in that long: its pooled sandboxes are destroyed.
  A profile used once gets nothing (measured: a pool boot for every one-off size stole
  the CPU of the creates that followed on 2 cores);
- all pools together stay within `max_total` (SBX_WARM_POOL_MAX) sandboxes and
  `memory_budget_mib` (SBX_WARM_POOL_MEMORY_MIB) of memory, measured from the pooled
  sandboxes' own cgroups. The default profile's floor comes first, then the profiles asked
  for most recently. An idle sandbox is not free: ~20 MiB and, on gVisor's systrap
  platform, ~4% of a core each (measured: README, Benchmarks).

Must not import FastAPI or a concrete runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable

from runtimes import ContainerSpec, Runtime

from ...wire import new_id

log = logging.getLogger("sbx.server.pool")
REFILL_DELAY_S = 0.25  # a take's replacement waits this long: the caller's exec goes first
DEMAND_WINDOW_S = 60.0
MIN_DEMAND = 2  # creates of a profile in the window before it gets a pool
MAX_BOOTING = 2  # pool boots at once (background work: user creates come first)
TRIM_INTERVAL_S = 5.0
GUESS_MIB = 32  # a pooled sandbox's memory before it has been measured
FAILED_BOOT_PAUSE_S = 30.0  # a profile whose pool boot failed is not retried before this


@dataclasses.dataclass(frozen=True)
class Profile:
    image_id: str
    memory_mib: int
    cpu: float | None
    disk_mib: int | None


@dataclasses.dataclass
class _Entry:
    profile: Profile
    image: Any
    ready_at: float | None = None  # None while booting
    layers: Any = None


class WarmPool:
    def __init__(self, runtime: Runtime, size: int,
                 spec_for: Callable[[str, Any, Profile], ContainerSpec], *,
                 max_total: int | None = None, memory_budget_mib: int = 1024,
                 pin: Callable[[Any], Any] = lambda image: None,
                 unpin: Callable[[Any], None] = lambda token: None,
                 clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.size = max(0, size)
        self.max_total = max(self.size, max_total if max_total is not None else self.size)
        self.memory_budget_mib = memory_budget_mib
        self._spec_for = spec_for  # (container id, image, profile) -> ContainerSpec
        self._pin, self._unpin = pin, unpin  # keep a pooled sandbox's image from image GC
        self._entries: dict[str, _Entry] = {}  # container id -> entry (booting or ready)
        self._dropping: set[str] = set()  # no longer wanted, being destroyed
        self._demand: dict[Profile, list[float]] = {}
        self._images: dict[Profile, Any] = {}
        self._failed: dict[Profile, float] = {}  # profile -> when its last pool boot failed
        self._default: Profile | None = None
        self._tasks: set[asyncio.Task] = set()
        self._trimmer: asyncio.Task | None = None
        self._closed = False
        self._clock = clock

    # ---- what the manager sees ------------------------------------------------------
    def ids(self) -> set[str]:
        """Containers the pool owns (the collector must leave them alone)."""
        return set(self._entries) | self._dropping

    def ready(self) -> dict[Profile, int]:
        out: dict[Profile, int] = {}
        for e in self._entries.values():
            if e.ready_at is not None:
                out[e.profile] = out.get(e.profile, 0) + 1
        return out

    def set_default(self, image: Any, profile: Profile) -> None:
        """The base image at the default limits: `size` of them are always kept ready."""
        self._default = profile
        self._images[profile] = image
        self.rebalance()
        if self._trimmer is None and not self._closed:
            self._trimmer = asyncio.create_task(self._trim_loop(), name="sbx-pool-trim")

    def take(self, image: Any, profile: Profile) -> str | None:
        """A booted, never-used container of `profile`, or None; either way the demand is
        recorded and the pools rebalanced. Synchronous on purpose: the caller registers
        the id before its next await, so the collector never sees it unowned."""
        now = self._clock()
        self._demand.setdefault(profile, []).append(now)
        self._images[profile] = image
        cid = next((c for c, e in sorted(self._entries.items(), key=lambda kv: kv[1].ready_at or 0)
                    if e.profile == profile and e.ready_at is not None), None)
        if cid is not None:
            entry = self._entries.pop(cid)
            self._unpin(entry.layers)  # the manager pins it as a live sandbox now
        self.rebalance(delay_s=REFILL_DELAY_S)
        return cid

    # ---- sizing -----------------------------------------------------------------------
    def targets(self, now: float | None = None) -> dict[Profile, int]:
        """How many of each profile to keep, within the caps (see the module docstring)."""
        now = self._clock() if now is None else now
        wanted: list[tuple[float, Profile, int]] = []
        for prof, times in list(self._demand.items()):
            times[:] = [t for t in times if now - t < DEMAND_WINDOW_S]
            if not times:
                del self._demand[prof]
                continue
            if len(times) >= MIN_DEMAND:
                wanted.append((times[-1], prof, len(times)))
        wanted.sort(key=lambda w: -w[0])  # most recently asked for first
        out: dict[Profile, int] = {}
        left = self.max_total
        budget = float(self.memory_budget_mib)
        each = self._mib_each()
        if self._default is not None and self.size:
            n = min(self.size, left)  # the floor ignores the memory budget
            out[self._default], left, budget = n, left - n, budget - n * each
        for _, prof, n in wanted:
            have = out.get(prof, 0)
            extra = min(max(0, n - have), left, max(0, int(budget // each)))
            if extra:
                out[prof], left, budget = have + extra, left - extra, budget - extra * each
        return out

    def _mib_each(self) -> float:
        """Memory of one pooled sandbox: the median of those measured, else a guess."""
        got = sorted(b for b in (self.runtime.memory_bytes(c) for c, e in self._entries.items()
                                 if e.ready_at is not None) if b)
        return max(1.0, got[len(got) // 2] / 2**20) if got else float(GUESS_MIB)

    def rebalance(self, delay_s: float = 0.0) -> None:
        """Boot what is missing (a few at a time) and destroy what is no longer wanted."""
        if self._closed:
            return
        targets = self.targets()
        have: dict[Profile, list[str]] = {}
        for cid, e in sorted(self._entries.items(), key=lambda kv: kv[1].ready_at or float("inf")):
            have.setdefault(e.profile, []).append(cid)
        for prof, cids in have.items():  # surplus: the oldest ready ones go
            ready = [c for c in cids if self._entries[c].ready_at is not None]
            for cid in ready[:max(0, len(cids) - targets.get(prof, 0))]:
                self._forget(cid)
                self._dropping.add(cid)
                self._spawn(self._drop(cid))
        booting = sum(1 for e in self._entries.values() if e.ready_at is None)
        for prof, n in targets.items():
            image = self._images.get(prof)
            if self._clock() - self._failed.get(prof, float("-inf")) < FAILED_BOOT_PAUSE_S:
                continue
            for _ in range(n - len(have.get(prof, []))):
                if booting >= MAX_BOOTING or image is None:
                    break
                booting += 1
                cid = new_id("sandbox")
                self._entries[cid] = _Entry(prof, image, layers=self._pin(image))
                self._spawn(self._boot(cid, delay_s))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _boot(self, cid: str, delay_s: float) -> None:
        entry = self._entries[cid]
        try:
            await asyncio.sleep(delay_s)
            await self.runtime.create(self._spec_for(cid, entry.image, entry.profile))
        except Exception as e:  # a failed boot leaves the pool smaller; creates go cold
            log.warning("warm pool: boot failed (no retry for %.0fs): %s", FAILED_BOOT_PAUSE_S, e)
            self._failed[entry.profile] = self._clock()
            self._forget(cid)
            return
        except asyncio.CancelledError:
            self._forget(cid)
            await self.runtime.destroy(cid)
            raise
        if self._closed or cid not in self._entries:
            self._forget(cid)
            await self.runtime.destroy(cid)
            return
        entry.ready_at = self._clock()
        self.rebalance()  # the next one, if more are wanted

    def _forget(self, cid: str) -> None:
        entry = self._entries.pop(cid, None)
        if entry is not None:
            self._unpin(entry.layers)

    async def _drop(self, cid: str) -> None:
        try:
            await self.runtime.destroy(cid)
        finally:
            self._dropping.discard(cid)

    async def _trim_loop(self) -> None:
        while True:  # demand expires with time alone: look again now and then
            await asyncio.sleep(TRIM_INTERVAL_S)
            try:
                self.rebalance()
            except Exception:
                log.exception("warm pool: rebalance failed")

    async def close(self) -> None:
        """Destroy the pools (their sandboxes belong to nobody, so they never outlive it)."""
        self._closed = True
        for task in [*self._tasks, *([self._trimmer] if self._trimmer else [])]:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for cid in list(self._entries):
            entry = self._entries.pop(cid)
            self._unpin(entry.layers)
            if entry.ready_at is not None:
                await self.runtime.destroy(cid)
