"""Fixtures of the runtime tests: a real `GVisorRuntime` of its own (real runsc) per test,
its leftovers collected after it; `module_runtime`, one per module."""

from __future__ import annotations

import pytest

from runtimes.gvisor import GVisorRuntime


def _runtime_fixture(scope: str):
    @pytest.fixture(scope=scope)
    async def fixture(tmp_path_factory):
        rt = GVisorRuntime(str(tmp_path_factory.mktemp("rt")))
        await rt.start()
        yield rt
        await rt.collect(set())
        await rt.close()
    return fixture


runtime = _runtime_fixture("function")
# one runtime shared by a module's tests (test_export.py: its tests share boots)
module_runtime = _runtime_fixture("module")
