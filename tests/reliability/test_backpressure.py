"""Unread output is never buffered in the server (issue 10, defect 1).

Exec WebSockets whose clients never read (raw sockets: the upgrade, one request frame,
then no recv) running `cat /dev/zero` once grew the server by ~32 MiB each (the agent
connection read ahead up to twice its 16 MiB frame limit). Now every hop applies
back-pressure with a bound of tens of KiB per stream, the server caps open streams
(SBX_MAX_STREAMS), and a client that reads nothing for SBX_STREAM_STALL_S loses its
stream (its command is killed)."""

from __future__ import annotations

import time

import pytest
from rawws import drain, open_unread_exec
from sbxtest import own_server

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(300)
STREAMS = 24
STALL_S = 20


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def tight(server):
    """A server of its own: few streams allowed, a short stall limit."""
    with own_server("sbx-tb-", SBX_MAX_STREAMS=str(STREAMS), SBX_STREAM_STALL_S=str(STALL_S),
                    SBX_WARM_POOL="0") as srv:
        yield srv


def test_unread_streams_hold_little_memory_then_are_dropped(tight):
    boxes = [sbx.Sandbox.create(timeout=600) for _ in range(3)]
    try:
        for sb in boxes:  # warm: the first exec of a sandbox allocates for good
            assert sb.exec("echo", "warm").stdout.read() == "warm\n"
        time.sleep(1)
        before = _rss_kib(tight.proc.pid)
        socks = [open_unread_exec(tight.port, tight.token, boxes[i % 3].object_id,
                                  ["cat", "/dev/zero"]) for i in range(STREAMS)]
        time.sleep(6)  # long enough for cat to fill every buffer on the way, many times over
        grown = _rss_kib(tight.proc.pid) - before
        # ~32 MiB per stream before the fix (768 MiB here); tens of KiB now
        assert grown < STREAMS * 1024, f"server grew {grown} KiB for {STREAMS} unread streams"

        # the total bound: every stream slot is taken, so one more is refused, typed
        with pytest.raises(sbx.QuotaExceededError, match="SBX_MAX_STREAMS"):
            boxes[0].exec("echo", "one too many").wait()

        # a client that reads nothing for STALL_S loses its stream...
        time.sleep(STALL_S + 5)
        closed = [drain(s, 15)[1] for s in socks]
        assert all(closed), f"{closed.count(False)} stalled streams still open"
        # ...and its command: no cat is left, and the slots are free again
        for sb in boxes:
            p = sb.exec("sh", "-c", "ps -eo comm | grep -c '^cat$' || true", timeout=30)
            assert p.stdout.read().strip() == "0"
        for s in socks:
            s.close()
    finally:
        for sb in boxes:
            try:
                sb.terminate()
            except sbx.SandboxError:
                pass
