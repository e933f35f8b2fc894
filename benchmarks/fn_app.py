"""The Modal-style apps that benchmarks/bench_functions.py measures.

A real module file on purpose: the SDK ships this file into each function container (at
/root/fn_app.py) and the runner imports it there by name, so it must import nothing the
container's image lacks (only the SDK, which the server mounts).

- `app`: trivial functions for the warm round trip, `.map` (three concurrency settings)
  and cold starts (with and without network).
- `warm_app`: one function kept at MIN_WARM containers (its memory is measured idle); a
  separate app so that running `app` never starts them.
"""

import sandbox_service as modal

MAP_CONTAINERS = 4   # the cap of the default (one input per container) map
MIN_WARM = 4         # idle warm containers whose memory is measured

app = modal.App("bench-fn")
warm_app = modal.App("bench-fn-warm")


@app.function(max_containers=MAP_CONTAINERS)
def noop(x):
    return x


@app.function(max_containers=1, block_network=True)
def noop_nonet(x):
    return x


@app.function(max_containers=1)
@modal.concurrent(max_inputs=50)
def noop_concurrent(x):
    return x


@app.function(max_containers=1)
@modal.batched(max_batch_size=50, wait_ms=10)
def noop_batched(xs):
    return list(xs)


@warm_app.function(min_containers=MIN_WARM)
def idle(x):
    return x
