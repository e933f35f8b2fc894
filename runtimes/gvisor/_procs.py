"""Host process bookkeeping for sandboxes (runtimes layer). Must not import the server.

runsc's sandbox and gofer processes outlive the `runsc run --detach` that started them. If
nobody reaps them they stay zombies and `runsc delete` waits 1-2 s for them (RUNSC.md), and
this machine's PID 1 does not reap. So the service makes itself a child subreaper and reaps
those pids itself: only the ones it recorded when `runsc run` returned, so it never steals an
exit status from asyncio's child watcher.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal

log = logging.getLogger("sbx.runtime.procs")
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) of a pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[1])


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def reap(pids: set[int]) -> set[int]:
    """waitpid (without blocking) each of `pids`, the sandbox and gofer processes this
    runtime saw `runsc run` leave behind as its children; returns those still to reap.
    Only these: an unknown zombie may be a subprocess whose exit status asyncio's child
    watcher is about to collect, and stealing it makes asyncio report exit code 255 for a
    command that succeeded (pids are reused quickly: pid_max is 32768 on some hosts)."""
    left = set()
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                left.add(pid)  # still running
        except ChildProcessError:
            pass  # not (or no longer) our child: reaped, or its parent's business
    return left


def cmdline_has(pid: int, token: str) -> bool:
    """Whether `pid` is alive and its command line names `token` (a container id): how a
    pid read from a state file is told apart from an unrelated process that reused it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return token.encode() in f.read()
    except OSError:
        return False


def kill(pids: list[int] | set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


async def kill_and_reap(pids: list[int], owned: set[int], timeout_s: float = 2.0) -> bool:
    """SIGKILL pids and wait until each is gone: reaped by us if it is in `owned` (and then
    dropped from it at once, before its number can be reused), else by its own parent."""
    import asyncio
    import time

    kill(pids)
    left = set(pids)
    deadline = time.monotonic() + timeout_s
    while left:
        for pid in list(left):
            if pid in owned:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                except ChildProcessError:
                    pass
                owned.discard(pid)
                left.discard(pid)
            elif not alive(pid):
                left.discard(pid)
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)
    return not left
