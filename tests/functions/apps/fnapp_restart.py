"""A deployed app whose calls are in flight when the server restarts (test_fn_restart.py)."""

import time

import sandbox_service as modal

app = modal.App("fn-restart")


@app.function(max_containers=1, timeout=60)
def slow(x):
    time.sleep(2)
    return x * 10


@app.function(max_containers=1, timeout=60, retries=modal.Retries(max_retries=1, initial_delay=0.1))
def slow_retried(x):
    time.sleep(2)
    return x + 1
