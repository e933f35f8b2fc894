"""The app of tests/functions/test_fn_cls.py: @app.cls with parameters, @enter, methods
(plain, generator, async), and concurrency and batching, of classes and functions."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import sandbox_service as modal

app = modal.App("fn-cls")

CONTAINER_TOKEN = uuid.uuid4().hex  # once per container
ENTERS: list[float] = []             # @enter runs, in this container


@app.cls(max_containers=1)
class Model:
    size: int = modal.parameter(default=1)
    label: str = modal.parameter(default="plain")

    @modal.enter()
    def load(self):
        ENTERS.append(time.time())
        self.weights = [self.size] * 3   # state made once, used by every input

    @modal.method()
    def predict(self, x):
        return {"y": x * self.size, "label": self.label, "enters": len(ENTERS),
                "token": CONTAINER_TOKEN, "weights": self.weights}

    @modal.method()
    def stream(self, n):
        for i in range(n):
            yield i * self.size

    @modal.method()
    async def apredict(self, x):
        await asyncio.sleep(0.01)
        return x + self.size

    @modal.method()
    def boom(self, message):
        raise ValueError(message)

    def not_a_method(self):
        return "local only"


class _Gauge:
    """How many inputs run at once in this container, and the most seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def __enter__(self):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def __exit__(self, *exc):
        with self.lock:
            self.active -= 1


GAUGE = _Gauge()


@app.function(max_containers=1)
@modal.concurrent(max_inputs=4)
def conc_fn(x):
    with GAUGE:
        time.sleep(0.8)
    return x, CONTAINER_TOKEN, GAUGE.peak


@app.function(max_containers=1)
@modal.concurrent(max_inputs=3)
async def aconc_fn(x):
    with GAUGE:
        await asyncio.sleep(0.6)
    return x, CONTAINER_TOKEN, GAUGE.peak


@app.cls(max_containers=1)
@modal.concurrent(max_inputs=3)
class ConcModel:
    @modal.enter()
    def up(self):
        self.gauge = _Gauge()

    @modal.method()
    def work(self, x):
        with self.gauge:
            time.sleep(0.6)
        return x, CONTAINER_TOKEN, self.gauge.peak


@app.function(max_containers=1)
@modal.batched(max_batch_size=4, wait_ms=300)
def double(xs):
    if -1 in xs:
        raise ValueError("a negative number in the batch")
    return [(x * 2, len(xs)) for x in xs]


@app.function(max_containers=1)
@modal.batched(max_batch_size=8, wait_ms=200)
def add_pairs(xs, ys):
    return [x + y for x, y in zip(xs, ys)]


@app.cls(max_containers=1)
class Embedder:
    @modal.batched(max_batch_size=3, wait_ms=200)
    def embed(self, texts):
        return [(len(t), len(texts)) for t in texts]
