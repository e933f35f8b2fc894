"""Talking to a running sandbox: exec, files, ports, snapshots (server layer).

`SandboxIO` is the half of `SandboxManager` that reaches inside a running sandbox through
the runtime; the lifecycle half (create, monitor, finish) is in `_manager.py`. Every call
into the runtime goes through `_agent_call`, which maps the runtime's errors to API errors
in one place (httpx's `map_exceptions` shape): an `AgentError` through the agent's error
table, an `AgentUnavailable` (the sandbox stopped, or its agent stopped answering) to
`interrupted()`'s typed error. Must not import FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from runtimes import (
    AgentError,
    AgentUnavailable,
    AgentUnresponsive,
    ExecSpec,
    FileStat,
    RuntimeFault,
    exit_codes,
)

from ...wire import ExecRequest
from ...wire import errors as E
from ._records import SandboxRecord
from ._runtime_errors import map_agent_error, map_port_error

if TYPE_CHECKING:
    from ._manager import _Live


class SandboxIO:
    """Mixed into `SandboxManager`; uses its `runtime`, `images`, `_live`, `get`, `_finish`."""

    max_streams: int
    _streams: int

    # ---- the running sandbox and its errors --------------------------------------------
    async def _running(self, sandbox_id: str) -> "_Live":
        live = self._live.get(sandbox_id)
        if live is None:
            rec = await self.get(sandbox_id)
            raise E.SandboxTerminatedError(
                f"sandbox {sandbox_id} is {rec.state} ({rec.reason}): create a new one")
        if live.rec.state != "running":
            raise E.ConflictError(f"sandbox {sandbox_id} is still {live.rec.state}")
        live.touch()
        return live

    @contextlib.asynccontextmanager
    async def _busy(self, sandbox_id: str) -> AsyncIterator["_Live"]:
        """Hold a running sandbox busy (no idle timeout) for the block."""
        live = await self._running(sandbox_id)
        live.active_execs += 1
        try:
            yield live
        finally:
            live.active_execs -= 1
            live.touch()

    @contextlib.asynccontextmanager
    async def _agent_call(self, sandbox_id: str, *, path: str | None = None,
                          port: int | None = None,
                          mapper: Callable[[AgentError], E.SandboxError] | None = None
                          ) -> AsyncIterator[None]:
        """Runtime errors raised in the block become the API's typed errors: an AgentError
        by its code (`mapper`, or the file/port tables), an AgentUnavailable by what
        happened to the sandbox, any other RuntimeFault as the host's fault."""
        try:
            yield
        except AgentUnavailable:
            raise await self.interrupted(sandbox_id) from None
        except AgentError as e:
            raise (mapper(e) if mapper is not None
                   else map_port_error(e, sandbox_id, port) if port is not None
                   else map_agent_error(e, path)) from None
        except NotImplementedError as e:  # this runtime lacks the feature
            raise E.InvalidRequestError(str(e)) from None
        except RuntimeFault as e:
            raise E.RuntimeUnavailableError(
                f"the runtime failed: {e}. Run `sbx doctor` to check the host") from None

    async def interrupted(self, sandbox_id: str) -> E.SandboxError:
        """The error for a call cut off from its sandbox's agent (AgentUnavailable): the
        sandbox stopped, or its agent stopped answering (then the sandbox is ended)."""
        live = self._live.get(sandbox_id)
        if live is not None:
            dead_agent = self.runtime.unresponsive(sandbox_id)
            if dead_agent is None and (await self.runtime.status(sandbox_id)).running:
                try:  # alive, yet its agent failed us: is anyone home?
                    await self.runtime.probe(sandbox_id)
                except AgentUnresponsive as e:
                    dead_agent = str(e)
                except (AgentUnavailable, OSError):  # gone as we asked: it stopped
                    pass
            if dead_agent:
                await self._finish(live, "failed", exit_codes.KILLED, dead_agent)
                return E.SandboxUnresponsiveError(
                    f"sandbox {sandbox_id} was ended: {dead_agent}. Create a new sandbox")
            await asyncio.wait({asyncio.ensure_future(live.done.wait())}, timeout=2.0)
        rec = await self.get(sandbox_id)
        if rec.state == "oom":
            return E.SandboxOOMError(f"sandbox {sandbox_id} {rec.reason}",
                                     details={"exit_code": rec.exit_code})
        return E.SandboxTerminatedError(
            f"sandbox {sandbox_id} stopped while the command ran: {rec.reason}")

    async def oom_under(self, sandbox_id: str, exit_code: int) -> E.SandboxOOMError | None:
        """A command that exited non-zero: when the kernel's OOM killer fired in the
        sandbox (on systrap it may take only that command's address-space stub, which the
        command sees as a bare exit 1), the sandbox ends as `oom` and the caller gets
        SandboxOOMError, as with any memory-limit kill."""
        live = self._live.get(sandbox_id)
        if (exit_code == 0 or live is None
                or not (await self.runtime.status(sandbox_id)).oom_killed):
            return None
        await self._finish(live, "oom", exit_codes.KILLED, live.rec.oom_reason())
        rec = await self.get(sandbox_id)
        return E.SandboxOOMError(f"sandbox {sandbox_id} {rec.reason}",
                                 details={"exit_code": rec.exit_code})

    @contextlib.contextmanager
    def stream_slot(self):
        """Count one open agent stream against `max_streams`: with about 200 KiB held per
        stream (docs/limits.md), this bounds what all streams together can hold."""
        if self._streams >= self.max_streams:
            raise E.QuotaExceededError(
                f"{self._streams} command, port and cell streams are open on this server, "
                f"the limit is {self.max_streams} (SBX_MAX_STREAMS): close some and retry")
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1

    # ---- exec, ports ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def exec_stream(self, sandbox_id: str, req: ExecRequest) -> AsyncIterator[Any]:
        async with self._busy(sandbox_id) as live:
            spec = ExecSpec(argv=list(req.argv), env=req.env, cwd=req.workdir or live.rec.workdir,
                            timeout_s=req.timeout_s, pty=req.pty, rows=req.rows, cols=req.cols,
                            uid=live.rec.uid, gid=live.rec.gid)
            with self.stream_slot():
                async with self._agent_call(sandbox_id):
                    stream = await self.runtime.exec(sandbox_id, spec)
                try:
                    yield stream
                finally:
                    await stream.close()

    @contextlib.asynccontextmanager
    async def port_stream(self, sandbox_id: str, port: int
                          ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A raw byte stream to a declared port of a running sandbox. While it is open the
        sandbox counts as busy (no idle timeout)."""
        async with self._busy(sandbox_id) as live:
            if port not in live.rec.ports:
                raise E.NotFoundError(
                    f"sandbox {sandbox_id} does not expose port {port}: declare it at create, "
                    f"e.g. Sandbox.create(encrypted_ports=[{port}])", details={"port": port})
            with self.stream_slot():
                async with self._agent_call(sandbox_id, port=port):
                    reader, writer = await self.runtime.open_port(sandbox_id, port)
                try:
                    yield reader, writer
                finally:
                    writer.close()

    async def write_main_stdin(self, sandbox_id: str, data: bytes, eof: bool) -> None:
        """Modal's `sb.stdin.write` / `write_eof` for the sandbox's main command."""
        def mapper(e: AgentError) -> E.SandboxError:
            if e.code == "not_found":
                return E.InvalidRequestError(
                    f"sandbox {sandbox_id} has no main command: sb.stdin belongs to a sandbox "
                    "created with a command (Sandbox.create('cat')); use sb.exec(...).stdin")
            if e.code == "stdin_closed":
                return E.ConflictError(e.message)
            return map_agent_error(e)

        async with self._busy(sandbox_id):
            async with self._agent_call(sandbox_id, mapper=mapper):
                await self.runtime.write_main_stdin(sandbox_id, data, eof)

    @contextlib.asynccontextmanager
    async def in_use(self, sandbox_id: str) -> AsyncIterator[SandboxRecord]:
        """Hold a running sandbox busy (no idle timeout) for the block; yields its record."""
        async with self._busy(sandbox_id) as live:
            yield live.rec

    # ---- files and snapshots ----------------------------------------------------------
    async def list_dir(self, sandbox_id: str, path: str) -> list[FileStat]:
        await self._running(sandbox_id)
        async with self._agent_call(sandbox_id, path=path):
            return await self.runtime.list_dir(sandbox_id, path)

    async def stat(self, sandbox_id: str, path: str) -> FileStat:
        await self._running(sandbox_id)
        async with self._agent_call(sandbox_id, path=path):
            return await self.runtime.stat(sandbox_id, path)

    async def mkdir(self, sandbox_id: str, path: str, *, parents: bool = True) -> None:
        await self._running(sandbox_id)
        async with self._agent_call(sandbox_id, path=path):
            await self.runtime.mkdir(sandbox_id, path, parents=parents)

    async def remove(self, sandbox_id: str, path: str, *, recursive: bool = False) -> None:
        await self._running(sandbox_id)
        async with self._agent_call(sandbox_id, path=path):
            await self.runtime.remove(sandbox_id, path, recursive=recursive)

    async def read_file(self, sandbox_id: str, path: str) -> AsyncIterator[bytes]:
        """Returns an iterator whose first chunk has already been fetched (so errors such as
        a missing file surface before the HTTP response starts)."""
        await self._running(sandbox_id)
        it = self.runtime.read_file(sandbox_id, path).__aiter__()
        async with self._agent_call(sandbox_id, path=path):
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                first = b""

        async def chunks():
            if first:
                yield first
            async for chunk in it:
                yield chunk
        return chunks()

    async def write_file(self, sandbox_id: str, path: str, chunks, *, mode=None) -> int:
        await self._running(sandbox_id)
        async with self._agent_call(sandbox_id, path=path):
            return await self.runtime.write_file(sandbox_id, path, chunks, mode=mode)

    async def snapshot(self, sandbox_id: str) -> dict[str, Any]:
        """A new image from the sandbox's file-system changes (it keeps running)."""
        async with self._busy(sandbox_id) as live:
            if not live.rec.rootfs:
                raise E.ConflictError(f"sandbox {sandbox_id} was created by an older server "
                                      "that did not record its image: snapshot a new sandbox")
            async with self._agent_call(sandbox_id):
                return await self.images.snapshot(sandbox_id, live.rec, live.rec.rootfs)
