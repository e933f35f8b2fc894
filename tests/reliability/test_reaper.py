"""The runtime reaps only the sandbox and gofer processes `runsc run` left to it (issue 10,
defect 4). Under load the old reaper waited for any zombie child it had seen twice and so
stole exit statuses from asyncio's child watcher: a `runsc run` that succeeded was reported
as `rc=255` with an empty message, and its create failed with a 503."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from runtimes.gvisor import GVisorRuntime
from runtimes.gvisor._procs import _stat
from runtimes.gvisor._runsc import RunscError


async def _zombie(pid: int) -> None:
    for _ in range(500):
        st = _stat(pid)
        if st and st[0] == "Z":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pid} never exited")


async def test_the_runtime_never_reaps_a_child_it_did_not_start(tmp_path):
    rt = GVisorRuntime(str(tmp_path / "rt"))
    await rt.start()
    try:
        child = subprocess.Popen(["sh", "-c", "exit 3"])  # waited for by its own code
        await _zombie(child.pid)
        for _ in range(3):  # each pass of the collector (and every destroy) reaps
            await rt.collect(set())
            await rt.destroy("sb-00000000000000000000")
        assert child.wait(timeout=5) == 3  # 0 when someone else took its status
    finally:
        await rt.close()


def test_runsc_errors_say_the_exit_code_and_what_it_printed():
    e = RunscError(["run", "--detach", "--bundle", "/b"], 255, "", "/x/runsc.log")
    assert "exited with code 255" in str(e) and "printed nothing" in str(e)
    assert "/x/runsc.log" in str(e)
    e = RunscError(["kill", "sb-1", "KILL"], 1, "line one\nbad thing happened\n")
    assert "exited with code 1" in str(e) and "bad thing happened" in str(e)
    assert "timed out" in str(RunscError(["delete"], None, ""))


pytestmark = pytest.mark.timeout(120)
