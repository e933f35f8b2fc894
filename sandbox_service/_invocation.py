"""Calling a deployed function (public layer, async): submit inputs, read outputs, turn an
output back into a value or the remote exception.

A call is one `fc-` id with one or more inputs (a `.map` is one call). Outputs are read by
long-polling `/v1/calls/{id}/outputs?after_seq=`, so nothing is lost between polls and a
`FunctionCall.from_id` in another process reads the same outputs.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, AsyncIterator, Iterable

from . import _serialization as S
from ._client import _Client
from .wire import errors as E

MAX_INPUTS_PER_REQUEST = 1000  # as wire.MAX_INPUTS_PER_REQUEST (checked by a test)

POLL_S = 25.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode_args(args: tuple, kwargs: dict) -> str:
    return b64(S.dumps((tuple(args), dict(kwargs))))


async def create_call(client: _Client, function_id: str, inputs: list[str], *,
                      method: str | None = None, params_b64: str | None = None,
                      kind: str = "call", closed: bool = True,
                      overrides: dict[str, Any] | None = None) -> str:
    body = {"method": method, "params_b64": params_b64, "inputs_b64": inputs, "kind": kind,
            "closed": closed, "overrides": overrides or None}
    data = await client.request("POST", f"/v1/functions/{function_id}/calls", json_body=body)
    return data["call_id"]


async def add_inputs(client: _Client, call_id: str, inputs: list[str], closed: bool) -> None:
    await client.request("POST", f"/v1/calls/{call_id}/inputs",
                         json_body={"inputs_b64": inputs, "closed": closed})


async def poll(client: _Client, call_id: str, after_seq: int,
               timeout_s: float = POLL_S) -> dict[str, Any]:
    return await client.request("GET", f"/v1/calls/{call_id}/outputs",
                                params={"after_seq": after_seq, "timeout_s": timeout_s},
                                timeout=timeout_s + 30)


async def outputs(client: _Client, call_id: str, *,
                  deadline: float | None = None) -> AsyncIterator[dict[str, Any]]:
    """Every output of the call, in the order they were made, until all inputs are done.
    Raises SandboxTimeoutError at `deadline` (time.monotonic())."""
    seq = 0
    looked = False
    while True:
        wait = POLL_S
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0 and looked:
                raise E.SandboxTimeoutError(
                    f"function call {call_id} has not finished yet: call .get() again later")
        page = await poll(client, call_id, seq, max(0.0, wait))
        looked = True  # get(timeout=0) looks once
        for out in page["outputs"]:
            yield out
        seq = page["next_seq"]
        if page["done"]:
            return


def decode(out: dict[str, Any]) -> Any:
    """The value of a final output, or raise what the function raised."""
    status = out["status"]
    if status in ("success", "item"):
        data = out.get("data_b64")
        return S.loads(base64.b64decode(data)) if data else None
    raise error_of(out)


def error_of(out: dict[str, Any]) -> BaseException:
    status, msg = out["status"], out.get("message") or ""
    tb = out.get("traceback") or ""
    if status == "failure":
        data = out.get("data_b64")
        exc: BaseException | None = None
        if data:
            try:
                exc = S.loads(base64.b64decode(data))
            except E.DeserializationError:
                exc = None
        if not isinstance(exc, BaseException):
            exc = E.RemoteError(f"{msg}\n\nRemote traceback:\n{tb}" if tb else msg)
        elif tb:
            _attach_traceback(exc, tb)
        return exc
    if status == "timeout":
        return E.FunctionTimeoutError(msg or "the function ran past its timeout")
    if status == "cancelled":
        return E.FunctionCancelledError(msg or "the function call was cancelled")
    if status == "expired":
        return E.OutputExpiredError(msg or "the output has expired")
    if status == "init_failure":
        return E.ExecutionError(msg or "the function's container failed to start")
    return E.ExecutionError(msg or f"the input ended: {status}")


def _attach_traceback(exc: BaseException, tb: str) -> None:
    note = "Remote traceback (in the function's container):\n" + tb.rstrip()
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    exc.__sbx_remote_traceback__ = tb  # type: ignore[attr-defined]


async def feed(client: _Client, call_id: str, rest: Iterable[str]) -> None:
    """Send the remaining inputs of a map in chunks, then close the call."""
    chunk: list[str] = []
    for item in rest:
        chunk.append(item)
        if len(chunk) == MAX_INPUTS_PER_REQUEST:
            await add_inputs(client, call_id, chunk, closed=False)
            chunk = []
    await add_inputs(client, call_id, chunk, closed=True)


async def cancel(client: _Client, call_id: str) -> None:
    try:
        await client.request("POST", f"/v1/calls/{call_id}/cancel")
    except (E.NotFoundError, E.ServerUnreachableError):
        pass


async def run_map(client: _Client, function_id: str, encoded: Iterable[str], *,
                  method: str | None, params_b64: str | None, order_outputs: bool,
                  return_exceptions: bool,
                  overrides: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    it = iter(encoded)
    first = [x for _, x in zip(range(MAX_INPUTS_PER_REQUEST), it)]
    rest = list(it)
    call_id = await create_call(client, function_id, first, method=method,
                                params_b64=params_b64, kind="map", closed=not rest,
                                overrides=overrides)
    feeder = asyncio.create_task(feed(client, call_id, rest)) if rest else None
    pending: dict[int, Any] = {}
    next_index = 0
    finished = False
    try:
        async for out in outputs(client, call_id):
            if out["status"] == "item":
                continue
            if out["status"] == "success":
                value: Any = decode(out)
            elif return_exceptions:
                value = error_of(out)
            else:
                raise error_of(out)
            if not order_outputs:
                yield value
                continue
            pending[out["index"]] = value
            while next_index in pending:
                yield pending.pop(next_index)
                next_index += 1
        finished = True
    finally:
        if feeder is not None:
            feeder.cancel()
        if not finished:
            await asyncio.shield(cancel(client, call_id))
