"""Interpreter contexts of running sandboxes (server layer): persistent Python processes
inside a sandbox that keep variables, imports and the working directory between cells.

The in-sandbox agent owns the contexts (agent/sbxagent/contexts.py), so they survive a
restart of the server; this service only forwards requests, maps the agent's error codes
to typed errors, creates the "default" context on its first run, and turns a cell's
frames into the NDJSON events of `wire/_contexts.py`. Must not import FastAPI or a concrete
runtime backend.
"""

from __future__ import annotations

import codecs
import contextlib
import json
from typing import Any, AsyncIterator, Awaitable, Callable

from runtimes import AgentError, AgentUnavailable

from ...wire import (
    CONTEXT_ID,
    DEFAULT_CONTEXT,
    CodeRunRequest,
    ContextCreate,
    ContextInfo,
    new_id,
)
from ...wire import errors as E
from ._manager import SandboxManager


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


class ContextService:
    def __init__(self, manager: SandboxManager):
        self.mgr = manager
        self.runtime = manager.runtime

    def _error(self, e: AgentError, sandbox_id: str, context_id: str | None) -> E.SandboxError:
        details = {"agent_code": e.code}
        if e.code == "no_context":
            return E.NotFoundError(
                f"no context {context_id!r} in sandbox {sandbox_id}: create one with "
                f"sb.create_context() (POST /v1/sandboxes/{sandbox_id}/contexts), or run in "
                f"the context {DEFAULT_CONTEXT!r}, which needs no create", details=details)
        if e.code == "context_dead":
            hint = (" (for 'default': delete it, and the next run starts a fresh one)"
                    if context_id == DEFAULT_CONTEXT else "")
            return E.ConflictError(e.message + hint, details=details)
        if e.code in ("context_busy", "conflict"):
            return E.ConflictError(e.message, details=details)
        if e.code == "too_many_contexts":
            return E.QuotaExceededError(e.message, details=details)
        return E.InvalidRequestError(e.message, details=details)

    def _check_id(self, sandbox_id: str, context_id: str) -> None:
        if not CONTEXT_ID.match(context_id or ""):
            raise self._error(AgentError("no_context", ""), sandbox_id, context_id)

    async def _call(self, sandbox_id: str, req: dict[str, Any]) -> dict[str, Any]:
        async with self.mgr.in_use(sandbox_id), self.mgr._agent_call(
                sandbox_id, mapper=lambda e: self._error(e, sandbox_id, req.get("ctx_id"))):
            return await self.runtime.context_op(sandbox_id, req)

    # ---- lifecycle ----------------------------------------------------------------------
    async def create(self, sandbox_id: str, body: ContextCreate,
                     context_id: str | None = None) -> ContextInfo:
        """A new context, as the sandbox's exec user, in its workdir and environment."""
        rec = await self.mgr.get(sandbox_id)
        data = await self._call(sandbox_id, {
            "op": "ctx_create", "ctx_id": context_id or new_id("context"),
            "cwd": body.cwd or rec.workdir, "env": body.env,
            "uid": rec.uid, "gid": rec.gid})
        return ContextInfo(**data)

    async def list(self, sandbox_id: str) -> list[ContextInfo]:
        data = await self._call(sandbox_id, {"op": "ctx_list"})
        return [ContextInfo(**c) for c in data["contexts"]]

    async def get(self, sandbox_id: str, context_id: str) -> ContextInfo:
        self._check_id(sandbox_id, context_id)
        return ContextInfo(**await self._call(sandbox_id, {"op": "ctx_get", "ctx_id": context_id}))

    async def delete(self, sandbox_id: str, context_id: str) -> None:
        self._check_id(sandbox_id, context_id)
        await self._call(sandbox_id, {"op": "ctx_delete", "ctx_id": context_id})

    async def interrupt(self, sandbox_id: str, context_id: str) -> bool:
        """SIGINT the running cell (escalating to killing the context if it is ignored);
        False when no cell was running."""
        self._check_id(sandbox_id, context_id)
        data = await self._call(sandbox_id, {"op": "ctx_interrupt", "ctx_id": context_id})
        return bool(data.get("interrupted"))

    # ---- running a cell -----------------------------------------------------------------
    async def _start(self, sandbox_id: str, context_id: str, body: CodeRunRequest) -> Any:
        req = {"op": "ctx_run", "ctx_id": context_id, "code": body.code,
               "timeout_s": body.timeout_s, "max_output_bytes": body.max_output_bytes}
        def mapper(e: AgentError) -> E.SandboxError:
            return self._error(e, sandbox_id, context_id)

        try:
            async with self.mgr._agent_call(sandbox_id, mapper=mapper):
                return await self.runtime.context_run(sandbox_id, req)
        except E.SandboxError as e:  # the default context is made on its first run
            if not (e.details.get("agent_code") == "no_context" and context_id == DEFAULT_CONTEXT):
                raise
        with contextlib.suppress(E.ConflictError):  # a concurrent first run made it
            await self.create(sandbox_id, ContextCreate(), DEFAULT_CONTEXT)
        async with self.mgr._agent_call(sandbox_id, mapper=mapper):
            return await self.runtime.context_run(sandbox_id, req)

    async def run(self, sandbox_id: str, context_id: str, body: CodeRunRequest
                  ) -> tuple[AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
        """Start the cell (errors raise here, before any response), then return its NDJSON
        event lines and a cleanup to run however the response ends (idempotent). Dropping
        the iterator before the end interrupts the cell."""
        self._check_id(sandbox_id, context_id)
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(self.mgr.in_use(sandbox_id))
        try:
            stack.enter_context(self.mgr.stream_slot())
            cell = await self._start(sandbox_id, context_id, body)
        except BaseException:
            await stack.aclose()
            raise
        stack.push_async_callback(cell.close)

        async def lines() -> AsyncIterator[bytes]:
            async with stack:
                try:
                    async for line in _ndjson(cell):
                        yield line
                except AgentUnavailable:
                    err = await self.mgr.interrupted(sandbox_id)
                    yield _line({"type": "failure", **err.to_wire()})

        return lines(), stack.aclose


async def _ndjson(cell: Any) -> AsyncIterator[bytes]:
    """The agent's frames as NDJSON events; output bytes become text (UTF-8, invalid
    bytes replaced, characters split across chunks joined)."""
    decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")}
    async for kind, payload in cell.events():
        if kind != "event":
            text = decoders[kind].decode(payload)
            if text:
                yield _line({"type": kind, "text": text})
            continue
        if payload.get("type") == "end":
            for name, dec in decoders.items():
                tail = dec.decode(b"", final=True)
                if tail:
                    yield _line({"type": name, "text": tail})
        yield _line(payload)
