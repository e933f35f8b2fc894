"""Host side of the in-sandbox agent's control channel (runtimes layer).

One Unix-socket connection per request, frames as defined in agent/sbxagent/proto.py (which
is stdlib-only, so importing it here keeps one definition of the wire format).
Must not import the server.

Two promises hold here without the agent's help (root in a sandbox can stop, wedge or
replace its agent):
- Memory: nothing is read ahead of its consumer. A connection buffers at most
  `READ_AHEAD_BYTES` from the agent; the agent's next frame is read only when the caller
  asks for it, so a caller that stops forwarding output stops the command's writes.
- Time: no wait on the agent is unbounded. After `LIVENESS_IDLE_S` without a frame the
  runtime's watchdog checks (and revives, or gives up on) the agent; a request the agent
  is alive for but does not answer fails after `REQUEST_IDLE_S`; a command with a timeout
  ends at its timeout plus `EXEC_GRACE_S` whatever the agent does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from typing import AsyncIterator, Awaitable, Callable

from ._base import ExecSpec, ExecStream, ExitFrame
from ._errors import RuntimeFault
from .agent.sbxagent import exits as exit_codes
from .agent.sbxagent import proto

log = logging.getLogger("sbx.runtime.agent")

_SUN_PATH_MAX = 100
READ_AHEAD_BYTES = 32 * 1024  # asyncio pauses reading above this (limit = half of it)
RECV_BYTES = 32 * 1024  # one recv from the agent's socket (asyncio's default is 256 KiB)
CONNECT_TIMEOUT_S = 10.0
LIVENESS_IDLE_S = 5.0
REQUEST_IDLE_S = 120.0
EXEC_GRACE_S = 5.0

Watchdog = Callable[[], Awaitable[None]]
FrameReader = Callable[[asyncio.StreamReader], Awaitable[tuple[int | None, bytes]]]


class AgentError(RuntimeFault):
    """The agent answered with an error (code is the agent's, e.g. not_found)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class AgentUnavailable(RuntimeFault):
    """Nothing answers on the agent's socket (sandbox gone, or not booted yet)."""


class _ConnectTimeout(AgentUnavailable):
    """The agent's listen queue is full: nobody accepts connections."""


class AgentUnresponsive(AgentUnavailable):
    """The agent's socket accepts but the agent no longer answers, and could not be revived
    (code in the sandbox stopped, wedged or replaced its PID 1). The message says so."""


async def _open(socket_path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the socket itself, never through a symlink: the directory is the
    sandbox's, and a link planted there must not lead the host to another socket."""
    try:
        fd = os.open(socket_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise AgentUnavailable(str(e)) from e
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise AgentUnavailable(f"{socket_path} is not a socket (the sandbox replaced it)")
        # the O_PATH descriptor names this very inode; it also keeps deep paths under
        # sun_path's 108 bytes
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(
            f"/proc/self/fd/{fd}", limit=READ_AHEAD_BYTES // 2), CONNECT_TIMEOUT_S)
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as e:
        raise AgentUnavailable(str(e)) from e
    except asyncio.TimeoutError:
        raise _ConnectTimeout(f"connecting to the agent took over {CONNECT_TIMEOUT_S:g}s "
                               "(its listen queue is full)") from None
    finally:
        os.close(fd)
    if hasattr(writer.transport, "max_size"):
        writer.transport.max_size = RECV_BYTES  # type: ignore[attr-defined]
    return reader, writer


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


class PastDeadline(Exception):
    """Raised by Channel.next when its absolute deadline passed (a command's timeout)."""


class Channel:
    """One connection to the agent. `next()` waits for a frame without ever cancelling a
    read halfway (the framing stays intact), running the watchdog whenever the agent has
    been silent for LIVENESS_IDLE_S."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 watchdog: Watchdog | None):
        self.reader = reader
        self.writer = writer
        self._watchdog = watchdog
        self._pending: asyncio.Future | None = None

    async def next(self, *, deadline: float | None = None, idle_s: float | None = REQUEST_IDLE_S,
                   read: FrameReader = read_frame) -> tuple[int | None, bytes]:
        """The next frame, or (None, b"") when the connection ended. Raises PastDeadline at
        the monotonic `deadline`, AgentError("timeout") after `idle_s` without a frame
        from an agent that answers pings, AgentUnresponsive from the watchdog."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(read(self.reader))
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            until = now + LIVENESS_IDLE_S
            if deadline is not None:
                until = min(until, deadline)
            if idle_s is not None:
                until = min(until, quiet_since + idle_s)
            done, _ = await asyncio.wait((self._pending,), timeout=max(0.0, until - now))
            if done:
                fut, self._pending = self._pending, None
                return fut.result()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise PastDeadline()
            if idle_s is not None and now >= quiet_since + idle_s:
                raise AgentError("timeout", f"the sandbox's agent did not answer within "
                                 f"{idle_s:g}s (it is alive; the operation is stuck)")
            if self._watchdog is not None:
                await self._watchdog()

    async def send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self.writer.close()


def _raise_if_error(obj: dict) -> dict:
    if "error" in obj:
        raise AgentError(obj["error"], obj.get("message", obj["error"]))
    return obj


def _exec_fields(spec: ExecSpec) -> dict:
    return {"argv": spec.argv, "env": spec.env, "cwd": spec.cwd, "timeout_s": spec.timeout_s,
            "pty": spec.pty, "rows": spec.rows, "cols": spec.cols, "uid": spec.uid,
            "gid": spec.gid, "keep_stdin": spec.keep_stdin}


class AgentClient:
    """Requests to one sandbox's agent. `watchdog` (the runtime's liveness check) runs when
    the agent is silent for LIVENESS_IDLE_S; it returns if the agent answers (perhaps
    after reviving it) and raises AgentUnresponsive if it does not."""

    def __init__(self, socket_path: str, watchdog: Watchdog | None = None):
        self.socket_path = socket_path
        self.watchdog = watchdog

    async def _request(self, req: dict) -> Channel:
        try:
            reader, writer = await _open(self.socket_path)
        except _ConnectTimeout:
            if self.watchdog is None:
                raise
            await self.watchdog()  # a full listen queue: is anyone still accepting?
            reader, writer = await _open(self.socket_path)
        chan = Channel(reader, writer, self.watchdog)
        try:
            await chan.send(proto.encode_json(proto.REQ, req))
        except (ConnectionError, RuntimeError) as e:
            chan.close()
            raise AgentUnavailable(f"the agent closed the connection: {e}") from None
        return chan

    async def _first(self, chan: Channel, what: str,
                     idle_s: float | None = REQUEST_IDLE_S) -> tuple[int, bytes]:
        try:
            ftype, payload = await chan.next(idle_s=idle_s)
        except BaseException:
            chan.close()
            raise
        if ftype is None:
            chan.close()
            raise AgentUnavailable(f"agent closed the connection {what}")
        return ftype, payload

    async def call(self, req: dict, *, idle_s: float | None = REQUEST_IDLE_S) -> dict:
        chan = await self._request(req)
        try:
            _, payload = await self._first(chan, "before answering", idle_s)
            return _raise_if_error(json.loads(payload))
        finally:
            chan.close()

    async def ping(self, timeout_s: float = 10.0) -> dict:
        """One ping with a hard deadline and no watchdog (the watchdog is built on it)."""
        async def once() -> dict:
            reader, writer = await _open(self.socket_path)
            try:
                try:
                    writer.write(proto.encode_json(proto.REQ, {"op": "ping"}))
                    await writer.drain()
                except (ConnectionError, RuntimeError) as e:  # it died as we wrote
                    raise AgentUnavailable(f"agent closed the connection: {e}") from None
                ftype, payload = await read_frame(reader)
                if ftype is None:
                    raise AgentUnavailable("agent closed the connection")
                return _raise_if_error(json.loads(payload))
            finally:
                writer.close()
        return await asyncio.wait_for(once(), timeout_s)

    async def exec(self, spec: ExecSpec) -> "AgentExec":
        chan = await self._stream({"op": "exec", **_exec_fields(spec)})
        return AgentExec(chan, spec.timeout_s, self.watchdog)

    async def main_start(self, spec: ExecSpec) -> int:
        return (await self.call({"op": "main_start", **_exec_fields(spec)}))["pid"]

    async def main_attach(self, offsets: dict[str, int]) -> "AgentExec":
        return AgentExec(await self._stream({"op": "main_attach", "offsets": offsets}), None,
                         self.watchdog)

    async def _stream(self, req: dict) -> Channel:
        chan = await self._request(req)
        ftype, payload = await self._first(chan, "before the command started")
        if ftype == proto.STARTED:
            chan.started_pid = json.loads(payload)["pid"]  # type: ignore[attr-defined]
            return chan
        chan.close()
        _raise_if_error(json.loads(payload))
        raise AgentError("agent_error", f"unexpected frame {ftype!r}")

    async def port_connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw byte stream to 127.0.0.1:`port` inside the sandbox (see sbxagent/ports.py):
        after the agent's OK, the connection carries the TCP bytes both ways, unframed."""
        chan = await self._request({"op": "port_connect", "port": int(port)})
        ftype, payload = await self._first(chan, "before connecting")
        if ftype == proto.RESP:
            obj = json.loads(payload)
            if obj.get("ok"):
                return chan.reader, chan.writer
        chan.close()
        _raise_if_error(json.loads(payload))
        raise AgentError("agent_error", f"unexpected frame {ftype!r}")

    async def context_run(self, req: dict) -> "AgentCellRun":
        """Start a cell in an interpreter context (op ctx_run); errors before it starts
        (unknown, busy or dead context) raise AgentError."""
        chan = await self._request(req)
        ftype, payload = await self._first(chan, "before the cell started")
        if ftype == proto.STARTED:
            return AgentCellRun(chan)
        chan.close()
        _raise_if_error(json.loads(payload))
        raise AgentError("agent_error", f"unexpected frame {ftype!r}")

    async def read_file(self, path: str) -> AsyncIterator[bytes]:
        chan = await self._request({"op": "read", "path": path})
        try:
            _, payload = await self._first(chan, "before answering")
            _raise_if_error(json.loads(payload))
            while True:
                ftype, payload = await chan.next()
                if ftype == proto.DATA:
                    yield payload
                elif ftype == proto.EOF:
                    return
                elif ftype is None:
                    raise AgentUnavailable("agent closed the connection mid-file")
                else:
                    _raise_if_error(json.loads(payload))
        finally:
            chan.close()

    async def write_file(self, path: str, chunks: AsyncIterator[bytes], *,
                         mode: int | None = None, parents: bool = True) -> int:
        chan = await self._request({"op": "write", "path": path, "mode": mode,
                                    "parents": parents})
        try:
            _, payload = await self._first(chan, "before answering")
            _raise_if_error(json.loads(payload))
            async for chunk in chunks:
                for i in range(0, len(chunk), 1 << 20):
                    await chan.send(proto.encode(proto.DATA, chunk[i:i + (1 << 20)]))
            await chan.send(proto.encode(proto.EOF))
            ftype, payload = await chan.next()
            if ftype is None:
                raise AgentUnavailable("agent closed the connection")
            return _raise_if_error(json.loads(payload))["size"]
        except ConnectionError as e:
            raise AgentUnavailable(f"agent closed the connection: {e}") from None
        finally:
            chan.close()


class AgentExec(ExecStream):
    """A command running through the agent. With a timeout, the host ends the stream at
    timeout + EXEC_GRACE_S even if the agent never sends the exit (it may be stopped)."""

    def __init__(self, chan: Channel, timeout_s: float | None, watchdog: Watchdog | None):
        self._chan = chan
        self.pid = getattr(chan, "started_pid", None)
        self._deadline = (time.monotonic() + float(timeout_s) + EXEC_GRACE_S
                          if timeout_s else None)
        self._watchdog = watchdog

    async def events(self):
        while True:
            try:
                ftype, payload = await self._chan.next(deadline=self._deadline, idle_s=None)
            except PastDeadline:
                log.warning("a command's exit did not arrive %gs after its timeout: ended "
                            "by the host", EXEC_GRACE_S)
                self._chan.close()  # a live agent kills the command when the host leaves
                if self._watchdog is not None:  # find out soon whether the agent lives
                    asyncio.ensure_future(_quietly(self._watchdog()))
                yield ExitFrame(exit_codes.TIMEOUT, True, None)
                return
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
            await self._chan.send(frame)
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
        self._chan.close()


async def _quietly(aw: Awaitable[None]) -> None:
    try:
        await aw
    except Exception as e:  # the watchdog records what it found; nobody waits for this
        log.debug("background agent check: %s", e)


class AgentCellRun:
    """One cell running in an interpreter context. Closing it before its end interrupts
    the cell (the agent sees the host go away); the context keeps its state."""

    def __init__(self, chan: Channel):
        self._chan = chan

    async def events(self):
        """("stdout" | "stderr", bytes) and ("event", dict), ending with the "end" event."""
        while True:
            ftype, payload = await self._chan.next(idle_s=None)
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
            await self._chan.send(proto.encode_json(proto.SIG, {"signal": 2}))
        except (ConnectionError, RuntimeError):
            pass

    async def close(self) -> None:
        self._chan.close()
