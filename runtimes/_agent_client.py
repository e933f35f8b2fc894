"""Host side of the in-sandbox agent's control channel (runtimes layer).

One Unix-socket connection per request, frames as defined in agent/sbxagent/proto.py (which
is stdlib-only, so importing it here keeps one definition of the wire format).
Must not import the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import AsyncIterator

from ._base import ExecSpec, ExecStream, ExitFrame
from .agent.sbxagent import proto

log = logging.getLogger("sbx.runtime.agent")

_SUN_PATH_MAX = 100


class AgentError(Exception):
    """The agent answered with an error (code is the agent's, e.g. not_found)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class AgentUnavailable(Exception):
    """Nothing answers on the agent's socket (sandbox gone, or not booted yet)."""


async def _open(socket_path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        if len(socket_path) <= _SUN_PATH_MAX:
            return await asyncio.open_unix_connection(socket_path, limit=proto.MAX_FRAME)
        # sun_path is 108 bytes; reach a deep socket through a directory fd
        dfd = os.open(os.path.dirname(socket_path), os.O_PATH | os.O_DIRECTORY)
        try:
            short = f"/proc/self/fd/{dfd}/{os.path.basename(socket_path)}"
            return await asyncio.open_unix_connection(short, limit=proto.MAX_FRAME)
        finally:
            os.close(dfd)
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as e:
        raise AgentUnavailable(str(e)) from e


async def read_frame(reader: asyncio.StreamReader) -> tuple[int | None, bytes]:
    try:
        head = await reader.readexactly(proto.HEADER.size)
        ftype, length = proto.HEADER.unpack(head)
        if length > proto.MAX_FRAME:  # root in the sandbox can stand in for the agent:
            log.warning("agent sent a %d-byte frame (limit %d): dropping the connection",
                        length, proto.MAX_FRAME)  # never buffer what it claims
            return None, b""
        payload = await reader.readexactly(length) if length else b""
        return ftype, payload
    except (asyncio.IncompleteReadError, ConnectionError):
        return None, b""


def _raise_if_error(obj: dict) -> dict:
    if "error" in obj:
        raise AgentError(obj["error"], obj.get("message", obj["error"]))
    return obj


def _exec_fields(spec: ExecSpec) -> dict:
    return {"argv": spec.argv, "env": spec.env, "cwd": spec.cwd, "timeout_s": spec.timeout_s,
            "pty": spec.pty, "rows": spec.rows, "cols": spec.cols, "uid": spec.uid,
            "gid": spec.gid}


class AgentClient:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    async def _request(self, req: dict):
        reader, writer = await _open(self.socket_path)
        writer.write(proto.encode_json(proto.REQ, req))
        await writer.drain()
        return reader, writer

    async def call(self, req: dict) -> dict:
        reader, writer = await self._request(req)
        try:
            ftype, payload = await read_frame(reader)
            if ftype is None:
                raise AgentUnavailable("agent closed the connection")
            return _raise_if_error(json.loads(payload))
        finally:
            writer.close()

    async def ping(self) -> dict:
        return await self.call({"op": "ping"})

    async def exec(self, spec: ExecSpec) -> "AgentExec":
        return await self._stream({"op": "exec", **_exec_fields(spec)})

    async def main_start(self, spec: ExecSpec) -> int:
        return (await self.call({"op": "main_start", **_exec_fields(spec)}))["pid"]

    async def main_attach(self, offsets: dict[str, int]) -> "AgentExec":
        return await self._stream({"op": "main_attach", "offsets": offsets})

    async def _stream(self, req: dict) -> "AgentExec":
        reader, writer = await self._request(req)
        ftype, payload = await read_frame(reader)
        if ftype == proto.STARTED:
            return AgentExec(reader, writer, json.loads(payload)["pid"])
        writer.close()
        if ftype is None:
            raise AgentUnavailable("agent closed the connection before the command started")
        _raise_if_error(json.loads(payload))
        raise AgentError("agent_error", f"unexpected frame {ftype!r}")

    async def port_connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw byte stream to 127.0.0.1:`port` inside the sandbox (see sbxagent/ports.py):
        after the agent's OK, the connection carries the TCP bytes both ways, unframed."""
        reader, writer = await self._request({"op": "port_connect", "port": int(port)})
        ftype, payload = await read_frame(reader)
        if ftype == proto.RESP:
            obj = json.loads(payload)
            if obj.get("ok"):
                return reader, writer
        writer.close()
        if ftype is None:
            raise AgentUnavailable("agent closed the connection")
        _raise_if_error(json.loads(payload))
        raise AgentError("agent_error", f"unexpected frame {ftype!r}")

    async def context_run(self, req: dict) -> "AgentCellRun":
        """Start a cell in an interpreter context (op ctx_run); errors before it starts
        (unknown, busy or dead context) raise AgentError."""
        reader, writer = await self._request(req)
        ftype, payload = await read_frame(reader)
        if ftype == proto.STARTED:
            return AgentCellRun(reader, writer)
        writer.close()
        if ftype is None:
            raise AgentUnavailable("agent closed the connection before the cell started")
        _raise_if_error(json.loads(payload))
        raise AgentError("agent_error", f"unexpected frame {ftype!r}")

    async def read_file(self, path: str) -> AsyncIterator[bytes]:
        reader, writer = await self._request({"op": "read", "path": path})
        try:
            ftype, payload = await read_frame(reader)
            if ftype is None:
                raise AgentUnavailable("agent closed the connection")
            _raise_if_error(json.loads(payload))
            while True:
                ftype, payload = await read_frame(reader)
                if ftype == proto.DATA:
                    yield payload
                elif ftype == proto.EOF:
                    return
                elif ftype is None:
                    raise AgentUnavailable("agent closed the connection mid-file")
                else:
                    _raise_if_error(json.loads(payload))
        finally:
            writer.close()

    async def write_file(self, path: str, chunks: AsyncIterator[bytes], *,
                         mode: int | None = None, parents: bool = True) -> int:
        reader, writer = await self._request({"op": "write", "path": path, "mode": mode,
                                              "parents": parents})
        try:
            ftype, payload = await read_frame(reader)
            if ftype is None:
                raise AgentUnavailable("agent closed the connection")
            _raise_if_error(json.loads(payload))
            async for chunk in chunks:
                for i in range(0, len(chunk), 1 << 20):
                    writer.write(proto.encode(proto.DATA, chunk[i:i + (1 << 20)]))
                    await writer.drain()
            writer.write(proto.encode(proto.EOF))
            await writer.drain()
            ftype, payload = await read_frame(reader)
            if ftype is None:
                raise AgentUnavailable("agent closed the connection")
            return _raise_if_error(json.loads(payload))["size"]
        finally:
            writer.close()


class AgentExec(ExecStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int):
        self._reader = reader
        self._writer = writer
        self.pid = pid

    async def events(self):
        while True:
            ftype, payload = await read_frame(self._reader)
            if ftype == proto.OUT:
                yield ("stdout", payload)
            elif ftype == proto.ERR:
                yield ("stderr", payload)
            elif ftype == proto.EXIT:
                obj = json.loads(payload)
                yield ExitFrame(obj["exit_code"], bool(obj.get("timed_out")), obj.get("signal"))
                return
            elif ftype is None:
                raise AgentUnavailable("the sandbox stopped while the command was running")

    async def _send(self, frame: bytes) -> None:
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except (ConnectionError, RuntimeError):
            pass  # the command already finished; input is moot

    async def write_stdin(self, data: bytes) -> None:
        for i in range(0, len(data), 1 << 20):
            await self._send(proto.encode(proto.IN, data[i:i + (1 << 20)]))

    async def close_stdin(self) -> None:
        await self._send(proto.encode(proto.EOF))

    async def send_signal(self, signum: int) -> None:
        await self._send(proto.encode_json(proto.SIG, {"signal": int(signum)}))

    async def resize(self, rows: int, cols: int) -> None:
        await self._send(proto.encode_json(proto.RESIZE, {"rows": rows, "cols": cols}))

    async def close(self) -> None:
        self._writer.close()


class AgentCellRun:
    """One cell running in an interpreter context. Closing it before its end interrupts
    the cell (the agent sees the host go away); the context keeps its state."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    async def events(self):
        """("stdout" | "stderr", bytes) and ("event", dict), ending with the "end" event."""
        while True:
            ftype, payload = await read_frame(self._reader)
            if ftype == proto.OUT:
                yield ("stdout", payload)
            elif ftype == proto.ERR:
                yield ("stderr", payload)
            elif ftype == proto.EVENT:
                ev = json.loads(payload)
                yield ("event", ev)
                if ev.get("type") == "end":
                    return
            elif ftype is None:
                raise AgentUnavailable("the sandbox stopped while the cell was running")

    async def interrupt(self) -> None:
        try:
            self._writer.write(proto.encode_json(proto.SIG, {"signal": 2}))
            await self._writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    async def close(self) -> None:
        self._writer.close()
