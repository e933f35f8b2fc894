"""The app of tests/functions/test_fn_calls.py: plain functions called every way a caller
can (.remote, .map, .starmap, .for_each, .spawn, generators, async, .aio).

The SDK ships this file into each container at /root and the runner imports it as
`fnapp_core`, so it must import nothing the container lacks (the SDK is mounted there).
Every function has max_containers set: the test machine has two cores.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import sandbox_service as modal

app = modal.App("fn-core")

# made once per container, when the runner imports this module
CONTAINER_TOKEN = uuid.uuid4().hex


class CustomError(Exception):
    """An exception class of the user's own module: it travels pickled, by reference."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


class StubbornError(Exception):
    """Cannot be rebuilt from its args (its __init__ takes two), so it cannot travel as
    itself: the caller gets a RemoteError with its text and traceback."""

    def __init__(self, a: str, b: str):
        super().__init__(f"{a}/{b}")


@app.function(max_containers=1)
def echo(*args, **kwargs):
    return args, kwargs


@app.function(max_containers=1)
def nothing(x):
    x + 1


@app.function(max_containers=1)
def square(x):
    return x * x


@app.function(max_containers=1)
def add(a, b, c=0):
    return a + b + c


@app.function(max_containers=1)
def fail(kind: str, message: str):
    if kind == "value":
        raise ValueError(message)
    if kind == "custom":
        raise CustomError(message, code=42)
    if kind == "stubborn":
        raise StubbornError(message, "b")
    if kind == "key":
        return {}[message]
    return "no failure"


@app.function(max_containers=1)
def maybe_fail(x):
    if x % 3 == 1:
        raise ValueError(f"bad input {x}")
    return x * 10


@app.function(max_containers=1)
def record(item, dump: bool = False):
    """Appends each item to a file of its (one) container; dump=True reads them back."""
    path = "/tmp/record.txt"
    if dump:
        try:
            with open(path) as f:
                return f.read().split()
        except FileNotFoundError:
            return []
    if item == "boom":
        raise RuntimeError("record got boom")
    with open(path, "a") as f:
        f.write(f"{item}\n")
    return None


@app.function(max_containers=1)
def slow_square(x, delay: float):
    time.sleep(delay)
    return x * x


@app.function(max_containers=1)
@modal.concurrent(max_inputs=4)
def sleep_for(seconds: float):
    """Four inputs at once in one container: outputs come back as they finish."""
    time.sleep(seconds)
    return seconds


@app.function(max_containers=1)
@modal.concurrent(max_inputs=2)
def sleeper(mode: str, seconds: float = 60.0):
    """mode="run": sleeps in short steps (so a cancellation lands), writing what happened
    to a file of the container; mode="state": reads that file (a second input at once)."""
    path = "/tmp/sleeper-state"
    if mode == "state":
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return ""
    with open(path, "w") as f:
        f.write("started")
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
    except modal.exception.InputCancellation:
        with open(path, "w") as f:
            f.write("cancelled")
        raise
    with open(path, "w") as f:
        f.write("finished")
    return "finished"


@app.function(max_containers=1)
def gen(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"generator failed at {i}")
        yield i * i


@app.function(max_containers=1)
async def agen(n: int):
    for i in range(n):
        await asyncio.sleep(0.01)
        yield f"item-{i}"


@app.function(max_containers=1)
async def async_square(x):
    await asyncio.sleep(0.01)
    return x * x


@app.function(max_containers=1)
async def async_fail(message: str):
    await asyncio.sleep(0)
    raise CustomError(message, code=7)


@app.function(max_containers=1)
def where():
    """Facts about the container the function runs in."""
    return {"local": modal.is_local(), "token": CONTAINER_TOKEN, "cwd": os.getcwd(),
            "file": __file__, "pid": os.getpid()}
