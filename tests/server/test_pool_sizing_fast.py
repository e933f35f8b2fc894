"""Warm pools sized from demand (sandbox_service/server/services/_pool.py), against a
stub runtime at the pool's boundary: the default profile's floor, a pool per profile as
it is asked for, the caps on count and memory, expiry of demand, a few boots at a time,
and image pins that always balance. The real pool is tested in test_warm_pool.py."""

from __future__ import annotations

import asyncio
import types

import pytest

from runtimes import ContainerSpec
from sandbox_service.server.services._pool import (
    DEMAND_WINDOW_S,
    MAX_BOOTING,
    Profile,
    WarmPool,
)

pytestmark = pytest.mark.fast

IMG = types.SimpleNamespace(image_id="im-base", rootfs="/nonexistent")
OTHER = types.SimpleNamespace(image_id="im-other", rootfs="/nonexistent")
DEFAULT = Profile("im-base", 1024, None, 4096)
SMALL = Profile("im-base", 300, None, 4096)
CUSTOM = Profile("im-other", 1024, 1.0, 4096)


class StubRuntime:
    def __init__(self, mib_each: int = 20):
        self.live: set[str] = set()
        self.specs: dict[str, ContainerSpec] = {}
        self.booting = 0
        self.most_booting = 0
        self.mib_each = mib_each

    async def create(self, spec: ContainerSpec) -> None:
        self.booting += 1
        self.most_booting = max(self.most_booting, self.booting)
        await asyncio.sleep(0.005)
        self.booting -= 1
        self.live.add(spec.container_id)
        self.specs[spec.container_id] = spec

    async def destroy(self, cid: str):
        self.live.discard(cid)

    def memory_bytes(self, cid: str) -> int | None:
        return self.mib_each * 2**20 if cid in self.live else None


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(rt, size=2, max_total=8, budget=1024, clock=None):
    pins: list[int] = [0]

    def spec_for(cid, image, prof):
        return ContainerSpec(container_id=cid, rootfs=image.rootfs, memory_mib=prof.memory_mib,
                             cpu=prof.cpu, disk_mib=prof.disk_mib)

    def pin(image):
        pins[0] += 1
        return image.image_id

    def unpin(token):
        if token is not None:
            pins[0] -= 1

    pool = WarmPool(rt, size, spec_for, max_total=max_total, memory_budget_mib=budget,
                    pin=pin, unpin=unpin, clock=clock or Clock())
    return pool, pins


async def _settle(pool, rounds=60):
    for _ in range(rounds):
        await asyncio.sleep(0.01)
        if not any(e.ready_at is None for e in pool._entries.values()) and not pool._tasks:
            return


def test_the_default_floor_fills_and_a_take_comes_from_it():
    async def go():
        rt = StubRuntime()
        pool, pins = _pool(rt)
        pool.set_default(IMG, DEFAULT)
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 2}
        before = pool.ids()
        cid = pool.take(IMG, DEFAULT)
        assert cid in before and cid not in pool.ids()
        assert rt.specs[cid].memory_mib == 1024
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 2}, "refilled"
        assert pins[0] == 2  # one per pooled sandbox; the taken one was handed over
        await pool.close()
        assert pins[0] == 0 and rt.live == {cid}  # the one taken is the manager's now
    asyncio.run(go())


def test_a_profile_asked_for_gets_a_pool_of_its_own_with_its_limits():
    async def go():
        rt = StubRuntime()
        pool, _ = _pool(rt)
        pool.set_default(IMG, DEFAULT)
        await _settle(pool)
        assert pool.take(OTHER, CUSTOM) is None  # first time: cold, and no pool for a one-off
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 2}
        assert pool.take(OTHER, CUSTOM) is None  # second time: cold, now it is demand
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 2, CUSTOM: 2}, "two asked for in the window"
        cid = pool.take(OTHER, CUSTOM)
        assert cid is not None
        assert (rt.specs[cid].rootfs, rt.specs[cid].cpu) == ("/nonexistent", 1.0)
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 2, CUSTOM: 3}
        await pool.close()
    asyncio.run(go())


def test_a_burst_is_met_within_the_count_cap_a_few_boots_at_a_time():
    async def go():
        rt = StubRuntime()
        pool, _ = _pool(rt, size=1, max_total=5)
        pool.set_default(IMG, DEFAULT)
        await _settle(pool)
        for _ in range(10):
            pool.take(IMG, SMALL)
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 1, SMALL: 4}
        assert rt.most_booting <= MAX_BOOTING
        await pool.close()
        assert rt.live == set()
    asyncio.run(go())


def test_the_memory_budget_counts_what_pooled_sandboxes_use():
    async def go():
        rt = StubRuntime(mib_each=100)
        pool, _ = _pool(rt, size=1, max_total=10, budget=250)
        pool.set_default(IMG, DEFAULT)
        await _settle(pool)
        for _ in range(5):
            pool.take(IMG, SMALL)
        await _settle(pool)
        # the floor (100 MiB) comes first; 150 MiB left is one more of 100 MiB
        assert pool.ready() == {DEFAULT: 1, SMALL: 1}
        await pool.close()
    asyncio.run(go())


def test_demand_expires_and_its_sandboxes_are_destroyed():
    async def go():
        rt = StubRuntime()
        clock = Clock()
        pool, pins = _pool(rt, clock=clock)
        pool.set_default(IMG, DEFAULT)
        pool.take(OTHER, CUSTOM)
        pool.take(OTHER, CUSTOM)
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 2, CUSTOM: 2}
        clock.now += DEMAND_WINDOW_S + 1
        pool.rebalance()
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 2}, "the floor stays, the rest goes"
        assert len(rt.live) == 2 and pins[0] == 2
        await pool.close()
        assert rt.live == set() and pins[0] == 0
    asyncio.run(go())


def test_the_most_recent_demand_wins_when_the_cap_is_reached():
    async def go():
        rt = StubRuntime()
        clock = Clock()
        pool, _ = _pool(rt, size=1, max_total=2, clock=clock)
        pool.set_default(IMG, DEFAULT)
        pool.take(IMG, SMALL)
        pool.take(IMG, SMALL)
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 1, SMALL: 1}
        clock.now += 1
        pool.take(OTHER, CUSTOM)
        pool.take(OTHER, CUSTOM)
        await _settle(pool)
        assert pool.ready() == {DEFAULT: 1, CUSTOM: 1}
        await pool.close()
    asyncio.run(go())


def test_a_failed_boot_leaves_the_pool_smaller_and_the_pins_balanced():
    async def go():
        rt = StubRuntime()

        async def fail(spec):
            raise RuntimeError("no room")
        rt.create = fail
        pool, pins = _pool(rt)
        pool.set_default(IMG, DEFAULT)
        await _settle(pool)
        assert pool.ready() == {} and pins[0] == 0
        await pool.close()
    asyncio.run(go())
