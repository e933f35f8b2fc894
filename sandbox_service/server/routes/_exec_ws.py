"""WebSocket exec streaming (server layer). The frame protocol is documented in wire/_api.py.

Output flows agent -> server -> client with backpressure at each hop: the server reads the
next frame from the agent only after the previous one was handed to the WebSocket, so a
slow client slows the command instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from runtimes import AgentUnavailable, ExitFrame, exit_codes

from ...wire import (
    STREAM_STDERR,
    STREAM_STDIN,
    STREAM_STDOUT,
    ExecRequest,
    ExitStatus,
    new_id,
    validation_message,
)
from ...wire import errors as E
from .. import _access as access
from ._audit import exec_detail

log = logging.getLogger("sbx.server.ws")
ws_router = APIRouter()
_PREFIX = {"stdout": bytes([STREAM_STDOUT]), "stderr": bytes([STREAM_STDERR])}
MAX_CONTROL_FRAME = 1024 * 1024


async def _send_error(ws: WebSocket, exc: E.SandboxError) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps({"type": "error", **exc.to_wire()["error"]}))
        await ws.close(code=1000 if exc.http_status < 500 else 1011)


@ws_router.websocket("/v1/sandboxes/{sandbox_id}/exec/stream")
async def exec_stream(ws: WebSocket, sandbox_id: str) -> None:
    await ws.accept()
    try:
        principal = await access.authenticate(ws)
    except E.SandboxError as e:
        await _send_error(ws, e)
        return
    mgr = ws.app.state.manager
    try:
        first = await asyncio.wait_for(ws.receive(), 30)
        text = first.get("text")
        if text is None:
            raise E.InvalidRequestError("the first frame must be a JSON ExecRequest text frame")
        req = ExecRequest.model_validate_json(text)
    except ValidationError as e:
        await _send_error(ws, E.InvalidRequestError(validation_message(e)))  # type: ignore[arg-type]
        return
    except E.SandboxError as e:
        await _send_error(ws, e)
        return
    except (asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
        with contextlib.suppress(Exception):
            await ws.close()
        return
    try:  # after the request frame, so a client that sends first reads the answer
        await access.authorize(ws, principal)
    except E.SandboxError as e:
        await _send_error(ws, e)
        return
    audit = ws.app.state.audit
    if audit is not None:
        audit.record(principal.name, "sandbox.exec", sandbox_id, None, stream=True,
                     **exec_detail(req.argv))
    try:
        async with mgr.exec_stream(sandbox_id, req) as stream:
            await ws.send_text(json.dumps({"type": "started", "exec_id": new_id("exec"),
                                           "pid": stream.pid}))
            await _pump(ws, mgr, sandbox_id, stream)
    except E.SandboxError as e:
        await _send_error(ws, e)
    except WebSocketDisconnect:
        pass


async def _pump(ws: WebSocket, mgr, sandbox_id: str, stream) -> None:
    inbound = asyncio.create_task(_client_to_agent(ws, stream))
    try:
        try:
            async for ev in stream.events():
                if isinstance(ev, ExitFrame):
                    oom = await mgr.oom_under(sandbox_id, ev.exit_code)
                    if oom is not None:
                        raise oom
                    await ws.send_text(ExitStatus(**dataclasses.asdict(ev)).model_dump_json())
                    break
                message = _PREFIX[ev[0]] + ev[1]
                del ev  # hold one copy of the output while the client is slow, not two
                await ws.send_bytes(message)
        except AgentUnavailable:
            if inbound.done():
                return  # the client left first; closing the stream killed the command
            err = await mgr.interrupted(sandbox_id)
            if isinstance(err, E.SandboxOOMError):
                raise err from None
            # terminated (or crashed) under the command: report it as killed, like a shell
            status = ExitStatus(exit_code=exit_codes.KILLED, signal=signal.SIGKILL)
            await ws.send_text(status.model_dump_json())
        with contextlib.suppress(Exception):
            await ws.close(code=1000)
    finally:
        inbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await inbound


async def _client_to_agent(ws: WebSocket, stream) -> None:
    """stdin bytes, EOF, signals and resizes from the client. A vanished client ends the
    stream, which kills the command (nobody can read its output any more)."""
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is not None:
                if data[:1] == bytes([STREAM_STDIN]):
                    await stream.write_stdin(data[1:])
                continue
            text = msg.get("text") or ""
            if len(text) > MAX_CONTROL_FRAME:
                continue
            try:
                ctl = json.loads(text)
                kind = ctl.get("type")
                if kind == "eof":
                    await stream.close_stdin()
                elif kind == "signal":
                    signum = int(ctl["signal"])
                    if 1 <= signum <= 64:
                        await stream.send_signal(signum)
                elif kind == "resize":
                    await stream.resize(max(1, min(int(ctl["rows"]), 1000)),
                                        max(1, min(int(ctl["cols"]), 1000)))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.debug("ignoring malformed control frame")
    except (WebSocketDisconnect, RuntimeError):
        pass
    await stream.close()
