"""A command running in a sandbox, over one WebSocket (public layer, async implementation).

Exit semantics: `wait()` returns the exit code; a command killed by its `timeout` makes
`wait()` raise `ExecTimeoutError` (a `TimeoutError`) and sets `returncode` to 124, instead
of Modal's silent -1; a sandbox killed for memory raises `SandboxOOMError`; a command cut
short by `terminate()` exits with 137. The codes come from the server in the wire's
`ExitStatus` (decided in runtimes/agent/sbxagent/exits.py); this module picks none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal as _signal
from typing import Any

from ._client import _Client, dumps, ws_error
from ._streams import _AsyncStreamReader, _AsyncStreamWriter
from ._sync import Wrapped
from .wire import STREAM_STDERR, STREAM_STDIN, STREAM_STDOUT, ExecRequest, ExitStatus
from .wire import errors as E


class _AsyncContainerProcess:
    def __init__(self, ws: Any, sandbox_id: str, started: dict, *, text: bool, by_line: bool,
                 timeout_s: float | None):
        loop = asyncio.get_running_loop()
        self._ws = ws
        self.sandbox_id = sandbox_id
        self.exec_id: str = started.get("exec_id", "")
        self.pid: int | None = started.get("pid")
        self._timeout_s = timeout_s
        self.stdout = _AsyncStreamReader(text=text, by_line=by_line)
        self.stderr = _AsyncStreamReader(text=text, by_line=by_line)
        self.stdin = _AsyncStreamWriter(self._send_stdin, loop, text)
        self._exit: ExitStatus | None = None
        self._error: E.SandboxError | None = None
        self._done = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    @classmethod
    async def _start(cls, client: _Client, sandbox_id: str, req: ExecRequest, *, text: bool,
                     bufsize: int) -> "_AsyncContainerProcess":
        ws = await client.websocket(f"/v1/sandboxes/{sandbox_id}/exec/stream")
        try:
            await ws.send(req.model_dump_json())
            first = json.loads(await ws.recv())
        except Exception as e:
            await ws.close()
            from websockets.exceptions import ConnectionClosed

            if isinstance(e, ConnectionClosed):
                raise E.ServerUnreachableError("the server closed the exec stream") from None
            raise
        if first.get("type") == "error":
            await ws.close()
            raise ws_error(first)
        return cls(ws, sandbox_id, first, text=text, by_line=bufsize == 1,
                   timeout_s=req.timeout_s)

    async def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        readers = {STREAM_STDOUT: self.stdout, STREAM_STDERR: self.stderr}
        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    reader = readers.get(msg[0]) if msg else None
                    if reader is not None:
                        reader._feed(msg[1:])
                    continue
                frame = json.loads(msg)
                if frame.get("type") == "exit":
                    self._exit = ExitStatus.model_validate(frame)
                    break
                if frame.get("type") == "error":
                    self._error = ws_error(frame)
                    break
        except ConnectionClosed:
            pass
        except Exception as e:  # pragma: no cover - defensive
            self._error = E.SandboxError(f"exec stream failed: {e}")
        finally:
            if self._exit is None and self._error is None:
                self._error = E.ServerUnreachableError(
                    "lost the connection to the server while the command ran; the command "
                    "was killed")
            self.stdout._close()
            self.stderr._close()
            self._done.set()
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def _send_stdin(self, data: bytes | None) -> None:
        if self._done.is_set():
            return
        with contextlib.suppress(Exception):
            if data is None:
                await self._ws.send(dumps({"type": "eof"}))
            else:
                for i in range(0, len(data), 1 << 20):
                    await self._ws.send(bytes([STREAM_STDIN]) + data[i:i + (1 << 20)])

    async def wait(self) -> int:
        """Wait for the command to exit and return its exit code."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._exit is not None
        if self._exit.timed_out:
            raise E.ExecTimeoutError(
                f"the command ran past its timeout of {self._timeout_s:g}s and was killed "
                f"(exit code {self._exit.exit_code}): raise timeout= or make it faster",
                details={"exit_code": self._exit.exit_code})
        return self.returncode  # type: ignore[return-value]

    def poll(self) -> int | None:
        """The exit code if the command has finished, else None. Never raises."""
        if not self._done.is_set():
            return None
        return self.returncode if self._exit is not None else -1

    @property
    def returncode(self) -> int | None:
        return None if self._exit is None else self._exit.exit_code

    async def send_signal(self, signum: int) -> None:
        """Deliver a signal to the command's whole process group."""
        if not self._done.is_set():
            with contextlib.suppress(Exception):
                await self._ws.send(dumps({"type": "signal", "signal": int(signum)}))

    async def terminate(self) -> None:
        await self.send_signal(_signal.SIGTERM)

    async def kill(self) -> None:
        await self.send_signal(_signal.SIGKILL)

    async def resize(self, rows: int, cols: int) -> None:
        """Resize the pseudo-terminal of a `pty=True` process."""
        if not self._done.is_set():
            with contextlib.suppress(Exception):
                await self._ws.send(dumps({"type": "resize", "rows": rows, "cols": cols}))

    def __repr__(self) -> str:
        return f"_AsyncContainerProcess(sandbox_id={self.sandbox_id!r}, pid={self.pid})"


class ContainerProcess(Wrapped, impl=_AsyncContainerProcess):
    """A command running in a sandbox: `stdout`, `stderr`, `stdin`, `wait()`, `poll()`,
    `returncode`, `send_signal()`, `terminate()`, `kill()`."""
