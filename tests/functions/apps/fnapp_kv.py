"""The app of tests/functions/test_kv.py: functions that use a Dict and a Queue of their
owner from inside their containers."""

from __future__ import annotations

import sandbox_service as modal

app = modal.App("fn-kv")


@app.function(max_containers=2)
def producer(name, items):
    q = modal.Queue.from_name(name)
    q.put_many(items)
    d = modal.Dict.from_name(name)
    d["produced"] = len(items)
    return d.get("produced")


@app.function(max_containers=2, timeout=120)
def consumer(name, n):
    """Blocks on the queue until the producer (another container) puts."""
    q = modal.Queue.from_name(name)
    got = [q.get(timeout=60) for _ in range(n)]
    modal.Dict.from_name(name).put("consumed", got)
    return got
