"""The tools, implemented once against the async SDK (agent-tools layer).

`Toolbox(client, scope)` runs one call as the principal whose token `client` carries; the
`Scope` (see `_scopes.py`) remembers what this MCP session or caller created so it can be
cleaned up. Results are `Outcome`s: structured content (an output model), a text copy,
images and resource links; `ToolFailure` carries a message the model can act on.
Must not import `mcp`, the server or a runtime: it reaches the service only through the SDK.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import posixpath
import secrets
import time
from typing import Any, Awaitable, Callable

from pydantic import BaseModel

from sandbox_service.aio import AsyncSandbox, Client
from sandbox_service.wire import errors as E

from . import _models as M
from ._scopes import Scope

Progress = Callable[[float, "float | None", "str | None"], Awaitable[None]]
IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg",
               b"GIF87a": "image/gif", b"GIF89a": "image/gif"}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif")
MAX_IMAGE_BYTES = 5 << 20
MAX_INLINE_FILE_BYTES = 8 << 20
INTERPRETERS = {"python": ("python3", ".py"), "bash": ("bash", ".sh"), "node": ("node", ".js")}
_MISSING = "__sbx_missing_interpreter__"


class ToolFailure(Exception):
    """A failure the model should read: infrastructure, quota, timeout, bad handle."""

    def __init__(self, message: str, outcome: "Outcome | None" = None):
        super().__init__(message)
        self.outcome = outcome


@dataclasses.dataclass
class Outcome:
    structured: BaseModel
    text: str
    images: list[tuple[bytes, str]] = dataclasses.field(default_factory=list)
    links: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    is_error: bool = False

    def to_json(self) -> dict[str, Any]:
        """What `dispatch` hands a framework: the structured result plus is_error."""
        d = self.structured.model_dump(mode="json")
        if self.is_error:
            d["is_error"] = True
            d["error"] = self.text
        if self.links:
            d["resource_links"] = [link["uri"] for link in self.links]
        return d


def image_type(data: bytes) -> str | None:
    return next((mime for magic, mime in IMAGE_TYPES.items() if data.startswith(magic)), None)


def file_uri(sandbox_id: str, path: str) -> str:
    return f"sbx://sandboxes/{sandbox_id}/files/{path.lstrip('/')}"


def failure_from(e: E.SandboxError, doing: str) -> ToolFailure:
    code = getattr(e, "code", "error")
    hint = {"not_found": " (check the sandbox_id: create_sandbox returns one; ids of other "
                         "callers are not visible)",
            "sandbox_terminated": " (the sandbox has ended: create a new one)",
            "quota_exceeded": " (terminate sandboxes you no longer need, or wait)"}.get(code, "")
    return ToolFailure(f"{doing} failed [{code}]: {e}{hint}")


class _Capped:
    def __init__(self, cap_chars: int):
        self.cap_bytes = cap_chars * 4
        self.cap_chars = cap_chars
        self.parts: list[bytes] = []
        self.kept = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.cap_bytes - self.kept
        if room > 0:
            self.parts.append(data[:room])
            self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self) -> tuple[str, bool]:
        s = b"".join(self.parts).decode("utf-8", errors="replace")
        if len(s) <= self.cap_chars and not self.dropped:
            return s, False
        extra = len(s) - self.cap_chars
        return (s[:self.cap_chars] + f"\n[... truncated: {max(extra, 0)} more characters and "
                f"{self.dropped} more bytes not shown ...]\n"), True


def exec_text(out: M.ExecOutput) -> str:
    head = (f"exit_code={out.exit_code}" + (" (timed out)" if out.timed_out else "")
            + (" (output truncated)" if out.truncated else "") + f" in {out.duration_ms:.0f} ms")
    parts = [head]
    if out.stdout:
        parts.append("stdout:\n" + out.stdout)
    if out.stderr:
        parts.append("stderr:\n" + out.stderr)
    return "\n".join(parts)


class Toolbox:
    """One call's view of the tools, acting as `client`'s principal."""

    def __init__(self, client: Client, scope: Scope, *, progress: Progress | None = None):
        self.client = client
        self.scope = scope
        self.progress = progress

    async def call(self, name: str, args: BaseModel) -> Outcome:
        self.scope.touch()
        method = getattr(self, "tool_" + name)
        return await method(args)

    async def _sandbox(self, sandbox_id: str) -> AsyncSandbox:
        try:
            sb = await AsyncSandbox.from_id(sandbox_id, client=self.client)
        except E.SandboxError as e:
            raise failure_from(e, f"finding sandbox {sandbox_id}") from None
        if sb.info.state not in ("creating", "running"):
            raise ToolFailure(f"sandbox {sandbox_id} has ended ({sb.info.state}: "
                              f"{sb.info.reason or 'no reason'}): create a new one")
        return sb

    async def _create(self, *, timeout_s: float, idle_timeout_s: float, **kw: Any) -> AsyncSandbox:
        try:
            sb = await AsyncSandbox.create(timeout=timeout_s, idle_timeout=idle_timeout_s,
                                            client=self.client, tags={"created_by": "agent_tools"},
                                            **kw)
        except E.SandboxError as e:
            raise failure_from(e, "creating a sandbox") from None
        self.scope.adopt(sb.object_id)
        return sb

    async def _exec(self, sb: AsyncSandbox, argv: list[str], *, timeout_s: float, cap: int,
                    workdir: str | None = None, env: dict[str, str] | None = None) -> M.ExecOutput:
        t0 = time.monotonic()
        try:
            proc = await sb.exec(*argv, timeout=timeout_s, workdir=workdir, env=env, text=False)
        except E.SandboxError as e:
            raise failure_from(e, "starting the command") from None
        out, err = _Capped(cap), _Capped(cap)
        streamed = 0

        async def pump(reader: Any, buf: _Capped, label: str) -> None:
            nonlocal streamed
            async for chunk in reader:
                buf.add(chunk)
                if self.progress is not None and streamed < 64 * 1024:
                    streamed += len(chunk)
                    msg = chunk[:2000].decode("utf-8", errors="replace")
                    await self.progress(time.monotonic() - t0, None, f"{label}: {msg}")

        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(pump(proc.stdout, out, "stdout"),
                                                  pump(proc.stderr, err, "stderr")),
                                   timeout_s + 60)
            code = await proc.wait()
        except E.ExecTimeoutError:
            code, timed_out = 124, True
        except asyncio.TimeoutError:
            await proc.kill()
            code, timed_out = 124, True
        except E.SandboxError as e:
            raise failure_from(e, "running the command") from None
        so, t1 = out.text()
        se, t2 = err.text()
        return M.ExecOutput(stdout=so, stderr=se, exit_code=code, timed_out=timed_out,
                            truncated=t1 or t2, duration_ms=round((time.monotonic() - t0) * 1000, 1),
                            sandbox_id=sb.object_id)

    def _exec_outcome(self, out: M.ExecOutput, images: list[tuple[bytes, str]],
                      timeout_s: float) -> Outcome:
        text = exec_text(out)
        if out.timed_out:
            text = (f"the command ran past its timeout of {timeout_s:g}s and was killed: raise "
                    f"timeout_s (max {M.MAX_TIMEOUT_S}) or make it faster. " + text)
        return Outcome(out, text, images=images, is_error=out.timed_out)

    # ---- tools ----------------------------------------------------------------------------
    async def tool_run_code(self, a: M.RunCodeInput) -> Outcome:
        interp, ext = INTERPRETERS[a.language]
        fresh = a.sandbox_id is None
        sb = (await self._create(timeout_s=a.timeout_s + 300, idle_timeout_s=a.timeout_s + 120)
              if fresh else await self._sandbox(a.sandbox_id))
        try:
            tag = secrets.token_hex(6)
            src, outdir = f"/tmp/sbx-run-{tag}{ext}", f"/tmp/sbx-out-{tag}"
            try:
                await sb.filesystem.write_text(a.code, src)
                await sb.filesystem.make_directory(outdir, parents=True)
            except E.SandboxError as e:
                raise failure_from(e, "copying the code into the sandbox") from None
            script = (f'command -v {interp} >/dev/null 2>&1 || {{ echo {_MISSING} >&2; exit 127; }}; '
                      f'exec {interp} "$0"')
            out = await self._exec(sb, ["sh", "-c", script, src], timeout_s=a.timeout_s,
                                   cap=a.max_output_chars, workdir="/tmp",
                                   env={"SBX_OUTPUT_DIR": outdir, "MPLBACKEND": "Agg"})
            if out.exit_code == 127 and _MISSING in out.stderr:
                raise ToolFailure(f"this sandbox's image has no `{interp}`: use another language, "
                                  f"or create_sandbox with an image that has {interp} and pass "
                                  "its sandbox_id")
            images = await self._collect_images(sb, outdir)
            out.images = [p for _, _, p in images]
            return self._exec_outcome(out, [(d, m) for d, m, _ in images], a.timeout_s)
        finally:
            if fresh:
                await self._terminate_quietly(sb)

    async def _collect_images(self, sb: AsyncSandbox, outdir: str) -> list[tuple[bytes, str, str]]:
        found = []
        try:
            entries = await sb.filesystem.list_files(outdir)
        except E.SandboxError:
            return []
        for e in sorted(entries, key=lambda e: e.name)[:16]:
            if e.type == "file" and e.name.lower().endswith(IMAGE_EXTS) and e.size <= MAX_IMAGE_BYTES:
                path = posixpath.join(outdir, e.name)
                try:
                    data = await sb.filesystem.read_bytes(path)
                except E.SandboxError:
                    continue
                mime = image_type(data)
                if mime:
                    found.append((data, mime, path))
        return found

    async def _terminate_quietly(self, sb: AsyncSandbox) -> None:
        try:
            await sb.terminate()
        except E.SandboxError:
            pass
        self.scope.forget(sb.object_id)

    async def tool_create_sandbox(self, a: M.CreateSandboxInput) -> Outcome:
        from sandbox_service import Image

        if a.network == "allowlist" and not (a.cidr_allowlist or a.domain_allowlist):
            raise ToolFailure("network=allowlist needs cidr_allowlist (e.g. [\"203.0.113.0/24\"]) "
                              "and/or domain_allowlist (e.g. [\"pypi.org\"])")
        image = Image.from_id(a.image) if a.image != "debian_slim" else None
        sb = await self._create(timeout_s=a.timeout_s, idle_timeout_s=a.idle_timeout_s,
                                image=image, cpu=a.cpu, memory=a.memory_mib,
                                block_network=a.network == "none",
                                cidr_allowlist=a.cidr_allowlist if a.network == "allowlist" else None,
                                domain_allowlist=(a.domain_allowlist if a.network == "allowlist"
                                                  else None))
        info = sb.info
        out = M.SandboxOutput(sandbox_id=sb.object_id, image=a.image, state=info.state,
                              timeout_s=a.timeout_s, idle_timeout_s=a.idle_timeout_s)
        return Outcome(out, f"created sandbox {sb.object_id} ({a.image}); it ends after "
                            f"{a.idle_timeout_s:g}s idle or {a.timeout_s:g}s in all")

    async def tool_exec_command(self, a: M.ExecCommandInput) -> Outcome:
        sb = await self._sandbox(a.sandbox_id)
        out = await self._exec(sb, ["bash", "-lc", a.command], timeout_s=a.timeout_s,
                               cap=a.max_output_chars, workdir=a.workdir)
        return self._exec_outcome(out, [], a.timeout_s)

    async def tool_read_file(self, a: M.ReadFileInput) -> Outcome:
        sb = await self._sandbox(a.sandbox_id)
        uri = file_uri(a.sandbox_id, a.path)
        try:
            st = await sb.filesystem.stat(a.path)
            data = (await sb.filesystem.read_bytes(a.path)
                    if st.size <= MAX_INLINE_FILE_BYTES else None)
        except E.SandboxError as e:
            raise failure_from(e, f"reading {a.path}") from None
        link = {"uri": uri, "name": posixpath.basename(a.path) or a.path, "size": st.size}
        if data is None:
            out = M.ReadFileOutput(path=a.path, size=st.size, content=None, truncated=True,
                                   mime_type="application/octet-stream", resource_uri=uri)
            return Outcome(out, f"{a.path} is {st.size} bytes, too large to return inline: "
                                f"read it through the resource link {uri}", links=[link])
        mime = image_type(data)
        if mime and len(data) <= MAX_IMAGE_BYTES:
            out = M.ReadFileOutput(path=a.path, size=st.size, content=None, truncated=False,
                                   mime_type=mime, resource_uri=None)
            return Outcome(out, f"{a.path}: {mime} image, {st.size} bytes", images=[(data, mime)])
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            out = M.ReadFileOutput(path=a.path, size=st.size, content=None, truncated=False,
                                   mime_type="application/octet-stream", resource_uri=uri)
            return Outcome(out, f"{a.path} is binary ({st.size} bytes): resource link {uri}",
                           links=[dict(link, mime_type="application/octet-stream")])
        cut = len(text) > a.max_chars
        shown = text[:a.max_chars] + (f"\n[... truncated: {len(text) - a.max_chars} more "
                                      "characters; read the whole file via the resource link "
                                      "...]\n" if cut else "")
        out = M.ReadFileOutput(path=a.path, size=st.size, content=shown, truncated=cut,
                               mime_type="text/plain", resource_uri=uri if cut else None)
        return Outcome(out, shown, links=[dict(link, mime_type="text/plain")] if cut else [])

    async def tool_write_file(self, a: M.WriteFileInput) -> Outcome:
        sb = await self._sandbox(a.sandbox_id)
        data = a.content.encode()
        try:
            parent = posixpath.dirname(a.path)
            if parent and parent != "/":
                await sb.filesystem.make_directory(parent, parents=True)
            await sb.filesystem.write_bytes(data, a.path)
        except E.SandboxError as e:
            raise failure_from(e, f"writing {a.path}") from None
        return Outcome(M.WriteFileOutput(path=a.path, bytes_written=len(data)),
                       f"wrote {len(data)} bytes to {a.path}")

    async def tool_list_files(self, a: M.ListFilesInput) -> Outcome:
        sb = await self._sandbox(a.sandbox_id)
        try:
            entries = await sb.filesystem.list_files(a.path)
        except E.SandboxError as e:
            raise failure_from(e, f"listing {a.path}") from None
        entries = sorted(entries, key=lambda e: e.name)
        out = M.ListFilesOutput(path=a.path, truncated=len(entries) > 1000, entries=[
            M.FileEntryOut(name=e.name, type=e.type, size=e.size) for e in entries[:1000]])
        text = "\n".join(f"{e.type[0]} {e.size:>10} {e.name}" for e in out.entries) or "(empty)"
        return Outcome(out, text)

    async def tool_terminate_sandbox(self, a: M.TerminateSandboxInput) -> Outcome:
        try:
            sb = await AsyncSandbox.from_id(a.sandbox_id, client=self.client)
            await sb.terminate()
        except E.SandboxError as e:
            raise failure_from(e, f"terminating {a.sandbox_id}") from None
        self.scope.forget(a.sandbox_id)
        return Outcome(M.TerminateOutput(sandbox_id=a.sandbox_id, state=sb.info.state),
                       f"sandbox {a.sandbox_id} is {sb.info.state}")

    # ---- the stateful interpreter (SDK: sb.create_context / sb.run_code) ------------------
    async def tool_create_context(self, a: M.CreateContextInput) -> Outcome:
        sb = await self._sandbox(a.sandbox_id)
        if not hasattr(sb, "create_context"):
            raise ToolFailure("this server's SDK has no code interpreter contexts yet: use "
                              "run_code or exec_command")
        try:
            ctx = await sb.create_context(cwd=a.cwd)
        except E.SandboxError as e:
            raise failure_from(e, "creating a Python context") from None
        cid = str(getattr(ctx, "context_id", None) or getattr(ctx, "id"))
        return Outcome(M.ContextOutput(sandbox_id=a.sandbox_id, context_id=cid),
                       f"context {cid} in sandbox {a.sandbox_id}")

    async def tool_run_in_context(self, a: M.RunInContextInput) -> Outcome:
        sb = await self._sandbox(a.sandbox_id)
        if not hasattr(sb, "run_code"):
            raise ToolFailure("this server's SDK has no code interpreter contexts yet: use "
                              "run_code or exec_command")
        t0 = time.monotonic()
        out, err = _Capped(a.max_output_chars), _Capped(a.max_output_chars)

        def feed(buf: _Capped) -> Callable[[Any], None]:
            return lambda chunk: buf.add(chunk.encode() if isinstance(chunk, str) else bytes(chunk))

        try:  # the context id goes to the server as is: its access rules decide
            ex = await sb.run_code(a.code, context=a.context_id, timeout=a.timeout_s,
                                   on_stdout=feed(out), on_stderr=feed(err))
        except E.SandboxError as e:
            raise failure_from(e, "running the cell") from None
        if not out.kept and not err.kept:  # the callbacks may not have fired: use the logs
            logs = getattr(ex, "logs", None)
            for buf, items in ((out, getattr(logs, "stdout", None)), (err, getattr(logs, "stderr", None))):
                for item in items or []:
                    feed(buf)(item)
        images = [(r.png, "image/png") for r in getattr(ex, "results", []) or []
                  if getattr(r, "png", None)]
        e = getattr(ex, "error", None)
        so, t1 = out.text()
        se, t2 = err.text()
        timed_out = bool(getattr(ex, "timed_out", False))
        res = M.RunInContextOutput(
            stdout=so, stderr=se, text=getattr(ex, "text", None), timed_out=timed_out,
            truncated=t1 or t2 or bool(getattr(ex, "stdout_truncated", False)
                                       or getattr(ex, "stderr_truncated", False)),
            error=M.CellError(name=e.name, value=str(e.value), traceback=str(e.traceback))
            if e else None, duration_ms=round((time.monotonic() - t0) * 1000, 1),
            images=len(images))
        text = json.dumps({k: v for k, v in res.model_dump().items() if v not in (None, "", 0)},
                          indent=1)
        if timed_out:
            text = (f"the cell ran past its timeout of {a.timeout_s:g}s and was interrupted; "
                    "the context and its variables are kept: raise timeout_s or make the cell "
                    "faster. " + text)
        return Outcome(res, text, images=images, is_error=timed_out)
