"""REST routes: sandboxes, non-streaming exec, files, apps (server layer).

Handlers translate HTTP to SandboxManager calls and nothing more. Auth is enforced by the
app's middleware for every /v1 path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from runtimes import AgentUnavailable, ExitFrame

from ..._version import __version__
from ...wire import (
    ABS_PATH,
    AppInfo,
    AppLookup,
    ExecRequest,
    ExecResult,
    FileEntry,
    FileList,
    GpuList,
    MkdirRequest,
    SandboxCreate,
    SandboxInfo,
    SandboxList,
    SandboxTags,
    ServerInfo,
    check_abs_path,
    new_id,
)
from ...wire import errors as E
from .. import _access as access
from ..services import AppRecord, SandboxManager
from ._audit import exec_detail

router = APIRouter()
_PATH = Query(..., description="an absolute path inside the sandbox", json_schema_extra=ABS_PATH)


def _mgr(request: Request) -> SandboxManager:
    return request.app.state.manager


def _info(rec) -> SandboxInfo:
    return rec.info()


def _entry(f) -> FileEntry:
    return FileEntry(**dataclasses.asdict(f))  # runtimes.FileStat has FileEntry's fields


def _abs_path(path: str) -> str:
    """The wire models' path rule, as a typed error for query parameters."""
    try:
        return check_abs_path(path)
    except ValueError as e:
        raise E.InvalidRequestError(f"path {path!r} {e}") from None


@router.get("/health", include_in_schema=False)
async def health() -> dict:
    return {"ok": True}


@router.get("/v1/info", response_model=ServerInfo)
async def info(request: Request) -> ServerInfo:
    rt = request.app.state.runtime
    feats = getattr(rt, "features", None)
    return ServerInfo(version=__version__, runtime=rt.name,
                      runsc_version=getattr(feats, "version", None),
                      devices_locked=getattr(rt, "devices_locked", None),
                      sandboxes_running=len(await _mgr(request).list()))


@router.get("/v1/gpus", response_model=GpuList)
async def gpus(request: Request) -> GpuList:
    """The host's GPUs, which of them your sandboxes hold, and your GPU-seconds (an admin
    sees every holder and every principal's count)."""
    who = request.state.principal
    return _mgr(request).gpus.listing(who.name, who.is_admin)


# ---- sandboxes ---------------------------------------------------------------------------
@router.post("/v1/sandboxes", response_model=SandboxInfo, status_code=201)
async def create_sandbox(body: SandboxCreate, request: Request) -> SandboxInfo:
    who = request.state.principal
    if who.scope == "app":  # an app token creates in its app only
        if body.app_id not in (None, who.target):
            raise E.PermissionDeniedError(f"this token is limited to app {who.target}")
        body = body.model_copy(update={"app_id": who.target})
    if body.image.startswith("im-"):
        await access.check_image(request.app, who, body.image)
    rec = await _mgr(request).create(body, owner=who.name)
    request.state.audit_object = rec.sandbox_id
    request.state.audit_detail = {"image": rec.image_id}
    return _info(rec)


@router.get("/v1/sandboxes", response_model=SandboxList)
async def list_sandboxes(request: Request,
                         tag: list[str] = Query(default=[], description=(
                             "key:value (the key up to the first colon); repeat for more")),
                         tags: str | None = Query(None, max_length=64 * 1024, description=(
                             'a JSON object {"key": "value"}: for keys containing a colon')),
                         app_id: str | None = None, all: bool = False,
                         limit: int = Query(1000, ge=1, le=10000),
                         name: str | None = Query(None, max_length=64)) -> SandboxList:
    wanted = _tag_filter(tag, tags)
    who = request.state.principal
    recs = await _mgr(request).list(tags=wanted, app_id=app_id, include_finished=all,
                                    limit=limit if who.is_admin else 100_000, name=name)
    return SandboxList(sandboxes=[_info(r) for r in recs if access.owns(who, r)][:limit])


def _tag_filter(pairs: list[str], as_json: str | None) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for t in pairs:
        k, sep, v = t.partition(":")
        if not sep:
            raise E.InvalidRequestError(f"tag filter {t!r} must look like key:value (for a "
                                        'key with a colon, use tags={"key": "value"})')
        wanted[k] = v
    if as_json is not None:
        try:
            obj = json.loads(as_json)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
            raise E.InvalidRequestError('tags must be a JSON object of strings, like '
                                        '{"team": "infra"}')
        wanted.update(obj)
    return wanted


@router.put("/v1/sandboxes/{sandbox_id}/tags", response_model=SandboxInfo)
async def set_tags(sandbox_id: str, body: SandboxTags, request: Request) -> SandboxInfo:
    return _info(await _mgr(request).set_tags(sandbox_id, body.tags))


@router.get("/v1/sandboxes/{sandbox_id}", response_model=SandboxInfo)
async def get_sandbox(sandbox_id: str, request: Request) -> SandboxInfo:
    return _info(await _mgr(request).get(sandbox_id))


@router.delete("/v1/sandboxes/{sandbox_id}", response_model=SandboxInfo)
async def terminate_sandbox(sandbox_id: str, request: Request) -> SandboxInfo:
    return _info(await _mgr(request).terminate(sandbox_id))


@router.post("/v1/sandboxes/{sandbox_id}/stdin")
async def write_stdin(sandbox_id: str, request: Request, eof: bool = Query(False)) -> dict:
    """Write the request body to the main command's stdin (Modal's `sb.stdin`); `eof`
    closes it after the body."""
    data = await request.body()
    if len(data) > 16 * 1024 * 1024:
        raise E.PayloadTooLargeError("write at most 16 MiB to stdin per request")
    await _mgr(request).write_main_stdin(sandbox_id, data, eof)
    return {"written": len(data), "eof": eof}


@router.post("/v1/sandboxes/{sandbox_id}/wait", response_model=SandboxInfo)
async def wait_sandbox(sandbox_id: str, request: Request,
                       timeout_s: float = Query(30.0, ge=0, le=300)) -> SandboxInfo:
    return _info(await _mgr(request).wait(sandbox_id, timeout_s))


@router.get("/v1/sandboxes/{sandbox_id}/logs")
async def sandbox_logs(sandbox_id: str, request: Request,
                       stream: str = Query("stdout", pattern="^(stdout|stderr)$"),
                       follow: bool = True, offset: int = Query(0, ge=0)):
    """The main command's output; with follow, streams until the sandbox finishes."""
    mgr = _mgr(request)
    await mgr.get(sandbox_id)
    path = mgr.log_path(sandbox_id, stream)

    async def body():
        pos = offset
        while True:
            finished = not mgr.is_live(sandbox_id)
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    while chunk := f.read(256 * 1024):
                        pos += len(chunk)
                        yield chunk
            except FileNotFoundError:
                pass
            if finished or not follow:
                return
            await asyncio.sleep(0.02)

    return StreamingResponse(body(), media_type="application/octet-stream")


# ---- exec (non-streaming) ------------------------------------------------------------------
@router.post("/v1/sandboxes/{sandbox_id}/exec", response_model=ExecResult)
async def exec_once(sandbox_id: str, body: ExecRequest, request: Request) -> ExecResult:
    """Run a command to completion and return its output (capped; see `*_truncated`).
    Use the WebSocket route for streaming, stdin after start, or signals."""
    mgr = _mgr(request)
    request.state.audit_detail = exec_detail(body.argv)
    if body.pty:
        raise E.InvalidRequestError("pty needs the streaming route /exec/stream")
    start = time.monotonic()
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = {"stdout": False, "stderr": False}
    cap = body.max_output_bytes
    async with mgr.exec_stream(sandbox_id, body) as stream:
        if body.stdin:
            await stream.write_stdin(body.stdin.encode())
        await stream.close_stdin()
        try:
            async for ev in stream.events():
                if isinstance(ev, ExitFrame):
                    exit_ = ev
                    break
                name, data = ev
                room = cap - len(bufs[name])
                if room > 0:
                    bufs[name] += data[:room]
                if len(data) > max(room, 0):
                    truncated[name] = True
        except AgentUnavailable:
            raise await mgr.interrupted(sandbox_id) from None
    oom = await mgr.oom_under(sandbox_id, exit_.exit_code)
    if oom is not None:
        raise oom
    return ExecResult(**dataclasses.asdict(exit_), stdout=bufs["stdout"].decode(errors="replace"),
                      stderr=bufs["stderr"].decode(errors="replace"),
                      stdout_truncated=truncated["stdout"], stderr_truncated=truncated["stderr"],
                      duration_ms=round((time.monotonic() - start) * 1000, 3))


# ---- files --------------------------------------------------------------------------------
@router.get("/v1/sandboxes/{sandbox_id}/files")
async def read_file(sandbox_id: str, request: Request, path: str = _PATH):
    chunks = await _mgr(request).read_file(sandbox_id, _abs_path(path))
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.put("/v1/sandboxes/{sandbox_id}/files")
async def write_file(sandbox_id: str, request: Request, path: str = _PATH,
                     mode: int | None = Query(None, ge=0, le=0o7777)) -> dict:
    limit = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise E.PayloadTooLargeError(f"file is {declared} bytes; the limit is {limit}")

    async def body():
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise E.PayloadTooLargeError(f"file is over the limit of {limit} bytes")
            if chunk:
                yield chunk

    size = await _mgr(request).write_file(sandbox_id, _abs_path(path), body(), mode=mode)
    return {"path": path, "size": size}


@router.get("/v1/sandboxes/{sandbox_id}/files/list", response_model=FileList)
async def list_files(sandbox_id: str, request: Request, path: str = _PATH) -> FileList:
    found = await _mgr(request).list_dir(sandbox_id, _abs_path(path))
    return FileList(entries=[_entry(f) for f in found])


@router.get("/v1/sandboxes/{sandbox_id}/files/stat", response_model=FileEntry)
async def stat_file(sandbox_id: str, request: Request, path: str = _PATH) -> FileEntry:
    return _entry(await _mgr(request).stat(sandbox_id, _abs_path(path)))


@router.post("/v1/sandboxes/{sandbox_id}/files/mkdir")
async def make_directory(sandbox_id: str, body: MkdirRequest, request: Request) -> dict:
    await _mgr(request).mkdir(sandbox_id, body.path, parents=body.parents)
    return {"path": body.path}


@router.delete("/v1/sandboxes/{sandbox_id}/files")
async def remove_file(sandbox_id: str, request: Request, path: str = _PATH,
                      recursive: bool = False) -> dict:
    if _abs_path(path).rstrip("/") == "":
        raise E.InvalidRequestError("refusing to remove / ; terminate the sandbox instead")
    await _mgr(request).remove(sandbox_id, path, recursive=recursive)
    return {"path": path}


# ---- apps ----------------------------------------------------------------------
@router.post("/v1/apps/lookup", response_model=AppInfo)
async def lookup_app(body: AppLookup, request: Request) -> AppInfo:
    """Apps are named per principal: two principals' apps called "etl" are two apps."""
    store, who = _mgr(request).store, request.state.principal
    rec = await store.get_app_by_name(who.name, body.name)
    if who.scope == "app" and (rec is None or rec.app_id != who.target):
        raise E.PermissionDeniedError(f"this token is limited to app {who.target}")
    if rec is None:
        if not body.create_if_missing:
            raise E.NotFoundError(f"no app named {body.name!r}: pass create_if_missing=True")
        await store.put_app(AppRecord(app_id=new_id("app"), owner=who.name, name=body.name,
                                      created_at=time.time()))
        rec = await store.get_app_by_name(who.name, body.name)  # a concurrent create wins
    return rec.info()
