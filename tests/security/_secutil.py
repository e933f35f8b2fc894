"""Helpers shared by the hostile-program suite."""

from __future__ import annotations

import time

import sandbox_service as sbx


def quiet_terminate(sb) -> None:
    try:
        sb.terminate()
    except sbx.SandboxError:
        pass


def run(sb, script: str, timeout: float | None = 60) -> tuple[int, str, str]:
    """Run a Python program in the sandbox; (exit code, stdout, stderr)."""
    p = sb.exec("python3", "-c", script, timeout=timeout)
    out = p.stdout.read()
    err = p.stderr.read()
    return p.wait(), out, err


def sh(sb, script: str, timeout: float | None = 60) -> tuple[int, str, str]:
    p = sb.exec("sh", "-c", script, timeout=timeout)
    out = p.stdout.read()
    err = p.stderr.read()
    return p.wait(), out, err


def wait_state(sb, states, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sb.refresh().state in states:
            return sb.info.state
        time.sleep(0.1)
    return sb.refresh().state


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
