"""Root inside can stop its own agent (PID 1): that may end its sandbox, never hang its
caller (issue 10, defect 3). The host enforces exec timeouts itself, checks the agent's
liveness when it falls silent, revives a stopped agent with SIGCONT, and ends a sandbox
whose agent still does not answer with a typed error and a `failed` state that says why."""

from __future__ import annotations

import time

import pytest
from _secutil import quiet_terminate, sh, wait_state

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("signal", ["STOP", "TSTP"])
def test_a_stopped_agent_is_revived_and_timeouts_hold(victim, signal):
    t0 = time.monotonic()
    p = victim.exec("sh", "-c", f"kill -{signal} 1; sleep 30", timeout=5)
    with pytest.raises(sbx.ExecTimeoutError):
        p.wait()
    took = time.monotonic() - t0
    assert p.returncode == 124 and took < 20, (p.returncode, took)  # timeout + host grace
    t0 = time.monotonic()
    # the next calls find the agent silent, SIGCONT it, and go on
    assert victim.exec("echo", "back").stdout.read() == "back\n"
    victim.filesystem.write_text("data", "/tmp/f")
    assert victim.filesystem.read_text("/tmp/f") == "data"
    assert time.monotonic() - t0 < 40
    assert victim.refresh().state == "running"


def test_a_file_read_does_not_hang_on_a_stopped_agent(victim):
    code, _, err = sh(victim, "setsid sh -c 'sleep 0.5; kill -STOP 1' >/dev/null 2>&1 &")
    assert code == 0, err
    time.sleep(1.5)
    t0 = time.monotonic()
    assert victim.filesystem.list_files("/") is not None
    assert time.monotonic() - t0 < 40


def test_an_agent_kept_stopped_ends_its_sandbox_typed(victim):
    """A loop that stops PID 1 again right after every SIGCONT: the host gives up on
    the agent, ends the sandbox as failed, and tells the caller why."""
    code, _, err = sh(victim, "setsid sh -c \"sleep 1; exec python3 -c 'import os, signal\n"
                              "while True: os.kill(1, signal.SIGSTOP)'\" >/dev/null 2>&1 &")
    assert code == 0, err
    time.sleep(2)
    t0 = time.monotonic()
    with pytest.raises(sbx.SandboxUnresponsiveError) as info:
        victim.exec("echo", "never").wait()
    assert time.monotonic() - t0 < 90
    assert "stopped answering" in str(info.value)
    assert isinstance(info.value, sbx.SandboxTerminatedError)  # caught as before, too
    assert wait_state(victim, ("failed",)) == "failed"
    assert "agent" in victim.info.reason
    with pytest.raises(sbx.SandboxTerminatedError):
        victim.exec("echo", "after").wait()
