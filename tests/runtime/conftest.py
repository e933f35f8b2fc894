"""Fixtures of the runtime tests: a real `GVisorRuntime` of its own (real runsc) per test,
its leftovers collected after it."""

from __future__ import annotations

import pytest

from runtimes.gvisor import GVisorRuntime


@pytest.fixture
async def runtime(tmp_path_factory):
    rt = GVisorRuntime(str(tmp_path_factory.mktemp("rt")))
    await rt.start()
    yield rt
    await rt.collect(set())
    await rt.close()
