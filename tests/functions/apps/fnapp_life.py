"""The app of tests/functions/test_fn_lifecycle.py: timeouts, retries, single-use
containers, scale-down with @modal.exit."""

from __future__ import annotations

import os
import time
import uuid

import sandbox_service as modal

app = modal.App("fn-life")

CONTAINER_TOKEN = uuid.uuid4().hex  # once per container


def _count(key: str) -> int:
    """How many times this container ran `key` (a counter file under /tmp)."""
    path = f"/tmp/count-{key}"
    try:
        with open(path) as f:
            n = int(f.read())
    except FileNotFoundError:
        n = 0
    n += 1
    with open(path, "w") as f:
        f.write(str(n))
    return n


@app.function(timeout=2, max_containers=1)
def too_slow(seconds: float):
    time.sleep(seconds)
    return CONTAINER_TOKEN


# one container, so every attempt of an input sees the same /tmp counter
@app.function(max_containers=1, retries=modal.Retries(max_retries=2, backoff_coefficient=1.0,
                                                      initial_delay=0.1))
def flaky(key: str, fail_times: int):
    n = _count(key)
    if n <= fail_times:
        raise RuntimeError(f"attempt {n} of {key} fails")
    return n


@app.function(max_containers=1, retries=1)
def flaky_int(key: str, fail_times: int):
    n = _count(key)
    if n <= fail_times:
        raise RuntimeError(f"attempt {n} of {key} fails")
    return n


@app.function(timeout=2, max_containers=1,
              retries=modal.Retries(max_retries=1, backoff_coefficient=1.0, initial_delay=0.1))
def always_too_slow():
    time.sleep(30)


@app.function(single_use_containers=True, max_containers=3)
def single_use(x):
    return x, CONTAINER_TOKEN, os.getpid()


@app.function(single_use_containers=True, max_containers=1)
def single_use_capped(x):
    """More inputs than max_containers: the next container starts once one is done."""
    return x, CONTAINER_TOKEN


@app.cls(scaledown_window=2, max_containers=1)
class ShortLived:
    @modal.enter()
    def up(self):
        print(f"ENTER-RAN {CONTAINER_TOKEN}", flush=True)

    @modal.method()
    def token(self):
        return CONTAINER_TOKEN

    @modal.exit()
    def down(self):
        print(f"EXIT-RAN {CONTAINER_TOKEN}", flush=True)


@app.function(scaledown_window=2, max_containers=1)
def short_fn():
    return CONTAINER_TOKEN
