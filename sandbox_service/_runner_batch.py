"""`@modal.batched` inside the function runner (runs INSIDE a function container).

Inputs of one method collect until `max_batch_size` are waiting or `wait_ms` passed since
the first; the user's function gets one list per argument and returns one list of results,
in the same order. If it raises, every input of that batch fails with the exception.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from typing import Any, Callable

from . import _serialization as S


class Batcher:
    def __init__(self, runner: Any, fn: Callable, max_size: int, wait_ms: int):
        self.runner, self.fn = runner, fn
        self.max_size, self.wait_s = max_size, wait_ms / 1000.0
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def add(self, iid: str, body: bytes) -> None:
        self.q.put((iid, body))

    def _loop(self) -> None:
        while True:
            batch = [self.q.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self.q.get(timeout=left))
                except queue.Empty:
                    break
            self._run(batch)

    def _run(self, batch: list[tuple[str, bytes]]) -> None:
        ids, columns = [], None
        for iid, body in batch:
            try:
                args, kwargs = S.loads(body)
                if kwargs:
                    raise TypeError("@batched functions take positional arguments only")
            except BaseException as e:
                self.runner._fail(iid, e)
                continue
            if columns is None:
                columns = [[] for _ in args]
            if len(args) != len(columns):
                self.runner._fail(iid, TypeError("every input of a @batched function must "
                                                 "have the same number of arguments"))
                continue
            for col, a in zip(columns, args):
                col.append(a)
            ids.append(iid)
        if not ids:
            return
        try:
            results = self.fn(*(columns or []))
            if inspect.iscoroutine(results):
                results = asyncio.run(results)
            results = list(results)
            if len(results) != len(ids):
                raise ValueError(f"a @batched function returned {len(results)} results for "
                                 f"{len(ids)} inputs: return one per input, in order")
        except BaseException as e:
            for iid in ids:
                self.runner._fail(iid, e)
            return
        for iid, r in zip(ids, results):
            self.runner._succeed(iid, r)
