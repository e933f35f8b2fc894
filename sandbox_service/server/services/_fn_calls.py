"""Function calls and their outputs (server layer): the in-memory state of a call, written
through to the store, and the long-poll that readers wait on.

A call (`fc-`) has inputs 0..n-1 and an append-only list of outputs, each with a sequence
number: `item` outputs (generator yields) and exactly one final output per input
(success, failure, timeout, cancelled, init_failure, terminated). Readers ask for the
outputs from a sequence number on, so none is lost between two polls. Payloads are the
opaque bytes the SDK and the runner made.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

FINAL = ("success", "failure", "timeout", "cancelled", "init_failure", "terminated", "expired")


@dataclass
class InputRef:
    """One input waiting or running: which call, which index, the pickled arguments."""

    call: "CallState"
    index: int
    args: bytes
    attempt: int = 0       # runs so far (1 while the first run is in flight)
    not_before: float = 0.0  # a retry waits for its backoff

    @property
    def key(self) -> str:
        return f"{self.call.call_id}:{self.index}:{self.attempt}"


@dataclass
class CallState:
    call_id: str
    function_id: str
    owner: str
    kind: str
    created_at: float
    method: str | None = None
    params_b64: str | None = None
    overrides: dict[str, Any] | None = None
    inputs: int = 0
    closed: bool = False
    cancelled: bool = False
    finished: set[int] = field(default_factory=set)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # in memory, by seq
    first_seq: int = 0       # outputs before this were dropped from memory
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    last_touch: float = field(default_factory=time.time)

    @property
    def done(self) -> bool:
        return self.closed and len(self.finished) >= self.inputs

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.outputs)

    def record(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "function_id": self.function_id, "owner": self.owner,
                "kind": self.kind, "created_at": self.created_at, "method": self.method,
                "params_b64": self.params_b64, "overrides": self.overrides,
                "inputs": self.inputs, "closed": self.closed,
                "cancelled": self.cancelled, "finished": self.done}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "CallState":
        return cls(call_id=rec["call_id"], function_id=rec["function_id"], owner=rec["owner"],
                   kind=rec["kind"], created_at=rec["created_at"], method=rec.get("method"),
                   params_b64=rec.get("params_b64"), overrides=rec.get("overrides"),
                   inputs=rec["inputs"],
                   closed=rec["closed"], cancelled=rec.get("cancelled", False))

    def add_output(self, index: int, status: str, *, data: bytes | None = None,
                   message: str | None = None, traceback: str | None = None
                   ) -> dict[str, Any] | None:
        """Append an output (None when the input already has its final one)."""
        if index in self.finished:
            return None
        out = {"seq": self.next_seq, "index": index, "status": status, "data": data,
               "message": message, "traceback": traceback, "created_at": time.time()}
        self.outputs.append(out)
        if status in FINAL:
            self.finished.add(index)
        self.last_touch = time.time()
        return out

    async def notify(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def wait(self, after_seq: int, timeout_s: float) -> None:
        """Until there is an output at or after `after_seq`, the call is done, or timeout."""
        if self.next_seq > after_seq or self.done or timeout_s <= 0:
            return
        async with self.cond:
            try:
                await asyncio.wait_for(self.cond.wait_for(
                    lambda: self.next_seq > after_seq or self.done), timeout_s)
            except asyncio.TimeoutError:
                pass

    def since(self, after_seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        start = max(0, after_seq - self.first_seq)
        return self.outputs[start:start + limit]
