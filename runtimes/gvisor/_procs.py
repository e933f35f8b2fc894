"""Host process bookkeeping for sandboxes (runtimes layer). Must not import the server.

runsc's sandbox and gofer processes outlive the `runsc run --detach` that started them. If
nobody reaps them they stay zombies and `runsc delete` waits 1-2 s for them (RUNSC.md), and
this machine's PID 1 does not reap. So the service makes itself a child subreaper and reaps
those pids itself: only zombies it did not spawn through asyncio, so it never steals an exit
status from asyncio's child watcher.
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


def reap_orphans(exclude: set[int], seen_before: set[int]) -> set[int]:
    """waitpid every zombie child of ours that nobody else waits for; returns the zombies
    seen now, to pass back as `seen_before` next time. A zombie is reaped only when it was
    already one at the previous call: a subprocess asyncio started (mkfs, ip, nft...) is a
    zombie for an instant before asyncio's watcher reaps it, and stealing its status would
    make asyncio report exit code 255 for a command that succeeded."""
    me, now = os.getpid(), set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in exclude:
            continue
        st = _stat(pid)
        if st and st[1] == me and st[0] == "Z":
            now.add(pid)
            if pid in seen_before:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
    return now


def kill(pids: list[int] | set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


async def kill_and_reap(pids: list[int], timeout_s: float = 2.0) -> bool:
    """SIGKILL pids and wait until each is gone (reaped by us, or by its own parent)."""
    import asyncio
    import time

    kill(pids)
    left = set(pids)
    deadline = time.monotonic() + timeout_s
    while left:
        for pid in list(left):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    left.discard(pid)
                    continue
            except ChildProcessError:  # not our child: someone else reaps it
                if not alive(pid):
                    left.discard(pid)
                    continue
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)
    return not left
