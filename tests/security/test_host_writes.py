"""Nothing a sandbox writes reaches the host's disk except its quota disk (issue 10,
defect 2). The agent's socket directory, bind-mounted at /.sbx/run, is the one host
directory a sandbox can write: it is a 64 KiB, 16-inode tmpfs of its own, and a symlink
planted there never leads the host elsewhere. /dev and /dev/shm are memory (they count
against `memory=`)."""

from __future__ import annotations

import os
import time

import pytest
from _secutil import quiet_terminate, sh, wait_state

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(180)


def _host_run_dir(server, sb) -> str:
    return os.path.join(server.home, "runtime", "sandboxes", sb.object_id, "run")


def _du_bytes(path: str) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def test_the_socket_directory_is_tiny_and_off_the_host_disk(server):
    sb = sbx.Sandbox.create(ephemeral_disk=64, timeout=120)
    try:
        code, out, err = sh(sb, "dd if=/dev/zero of=/.sbx/run/big bs=1M count=300 2>&1; "
                                "df -k /.sbx/run | tail -1")
        assert "No space left on device" in out, out
        size_kib = int(out.strip().splitlines()[-1].split()[1])
        assert size_kib <= 64, out  # not the host's filesystem
        code, out, _ = sh(sb, "for i in $(seq 1 64); do mkdir /.sbx/run/d$i 2>/dev/null || "
                              "{ echo stopped at $i; break; }; done")
        assert "stopped at" in out and int(out.split()[-1]) <= 16, out
        assert _du_bytes(_host_run_dir(server, sb)) <= 128 * 1024
        assert sb.exec("echo", "still served").stdout.read() == "still served\n"
    finally:
        sb.terminate()


def test_the_agent_socket_cannot_be_replaced(server, victim):
    """Root replacing the agent's socket with a link can only break its own sandbox: the
    2022 runsc answers EPERM for host-backed sockets; the 2024 one lets root remove it, and
    then the sandbox answers with a typed error, not a hang. The host never follows a link
    planted there (tests/runtime/test_protocol_unit.py checks that half)."""
    code, out, err = sh(victim, "cd /.sbx/run; ln -s /tmp x; "
                                "rm -f agent.sock; echo rm=$?; mv -f x agent.sock; echo mv=$?; "
                                "ln -sf /tmp agent.sock; echo ln=$?")
    if "rm=0" not in out and "mv=0" not in out and "ln=0" not in out:
        assert victim.exec("echo", "agent intact").stdout.read() == "agent intact\n"
        return
    t0 = time.monotonic()
    with pytest.raises(sbx.SandboxError):
        victim.exec("echo", "x").wait()
    assert time.monotonic() - t0 < 60
    victim.terminate()  # and it still ends cleanly (the leak check runs after the session)


def test_dev_is_memory_bounded_by_the_sandbox_limit(server):
    """/dev is gVisor's own tmpfs (this runsc ignores size=): writes there are memory,
    so filling it ends only this sandbox, as oom, and nothing lands on the host."""
    sb = sbx.Sandbox.create(memory=256, timeout=120)
    try:
        try:
            sh(sb, "cat /dev/zero > /dev/fill", timeout=60)
        except sbx.SandboxError:
            pass  # the sandbox died under the command
        assert wait_state(sb, ("oom",), 30) == "oom"
    finally:
        quiet_terminate(sb)
