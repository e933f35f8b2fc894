"""FastAPI application factory (server layer).

`create_app(settings, runtime=..., store=..., images=...)` wires everything; nothing is a
module global, so tests build as many apps as they like. Errors become
`{"error": {"code", "message"}}` with the status their class names; validation errors are
400s, never FastAPI's default 422, and nothing reaches the client as a bare 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from security import AuditLog, KeyStore, ensure_admin_token

from .._version import __version__
from ..wire import errors as E
from ..wire import validation_message
from . import _access as access
from ._errors import ERROR_RESPONSES
from ._relay import http_relay, ws_relay
from ._settings import Settings
from ._stall import StallGuard
from ._web_ingress import WebIngress
from .routes import audit_request, include_routes
from .services import (
    FunctionService,
    GpuService,
    ImageService,
    KvService,
    SandboxManager,
    ScheduleService,
    SQLiteStore,
    Store,
    VolumeService,
)

log = logging.getLogger("sbx.server")


MAX_JSON_BODY = 32 << 20  # request bodies other than file and blob uploads
_UPLOADS = re.compile(r"^/v1/(sandboxes/[^/]+/files|sandboxes/[^/]+/ports/.*|blobs/[0-9a-f]+"
                      r"|volumes/[^/]+/file)$")


def _body_too_large(request: Request) -> E.SandboxError | None:
    """A declared body over the JSON limit is refused before it is read (file and blob
    uploads stream, with their own limit)."""
    if request.method not in ("POST", "PUT", "PATCH") or _UPLOADS.match(request.url.path):
        return None
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        return E.InvalidRequestError("Content-Length is not a number")
    if length > MAX_JSON_BODY:
        return E.PayloadTooLargeError(
            f"request body of {length} bytes is over the {MAX_JSON_BODY >> 20} MiB limit: send "
            "large files with the files API (sb.open / PUT .../files) instead")
    return None


class _ClientFaults(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 WebSocket text frame as an ERROR with a
    traceback; it is the client's fault (uvicorn closes with 1007 as it should): one
    warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Invalid UTF-8 sequence received from client"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
            record.msg = "a WebSocket client sent invalid UTF-8 in a text frame: closed (1007)"
        return True


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema minus its 422s: validation errors here are 400s (ErrorBody)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description=app.description)
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                if isinstance(op, dict):
                    op.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _lock_home(home: str) -> int:
    """One server per SBX_HOME: a second one would reap the first one's sandboxes as
    strays. The flock dies with the process, so a crashed server never blocks a restart."""
    import fcntl

    fd = os.open(os.path.join(home, "server.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise E.ConflictError(f"another `sbx serve` is already using {home}: stop it, or set "
                              "SBX_HOME to another directory for a second server") from None
    return fd


def begin_shutdown(app: FastAPI) -> None:
    """Called from a signal handler as the server starts to stop: wake every long-poll
    (function outputs, app logs) so open requests end now rather than hold the stop up."""
    functions = getattr(app.state, "functions", None)
    kv = getattr(app.state, "kv", None)
    loop = getattr(app.state, "loop", None)
    if functions is not None and loop is not None:
        loop.call_soon_threadsafe(functions.stopping.set)
    if kv is not None and loop is not None:
        loop.call_soon_threadsafe(kv.wake_all)  # blocking Queue gets answer now


def create_app(settings: Settings | None = None, *, runtime=None, store: Store | None = None,
               images=None, gpus=None) -> FastAPI:
    """The server. `runtime`, `store`, `images` and `gpus` (a `runtimes.Nvml` inventory:
    NVML's view of the host by default) are injected for tests."""
    settings = settings or Settings.from_env()
    os.makedirs(settings.home, mode=0o700, exist_ok=True)
    if os.stat(settings.home).st_mode & 0o077:  # an older or hand-made SBX_HOME: tighten
        log.warning("%s was readable by other users: setting it to 0700", settings.home)
        os.chmod(settings.home, 0o700)
    home_lock = _lock_home(settings.home)
    token = settings.token or ensure_admin_token(settings.home)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal runtime, store, images
        uv_log = logging.getLogger("uvicorn.error")  # configured by now
        if not any(isinstance(f, _ClientFaults) for f in uv_log.filters):
            uv_log.addFilter(_ClientFaults())
        if runtime is None:
            from runtimes.gvisor import GVisorRuntime

            runtime = GVisorRuntime(settings.path("runtime"), runsc_binary=settings.runsc_binary,
                                    platform=settings.platform,
                                    dns_upstream=settings.dns_upstream)
        await runtime.start()
        if images is None:
            from images import ImageStore

            images = ImageStore(settings.path("images"), mirror=settings.debian_mirror,
                                cache_dir=settings.image_cache)
        store = store or SQLiteStore(settings.path("state.db"))
        image_service = ImageService(base=images, runtime=runtime, store=store,
                                     home=settings.home, build=settings.build,
                                     wheel_cache=settings.wheel_cache)
        manager = SandboxManager(runtime=runtime, store=store, images=image_service,
                                 home=settings.home, policy=settings.policy,
                                 monitor_interval_s=settings.monitor_interval_s,
                                 collector_interval_s=settings.collector_interval_s,
                                 warm_pool=settings.warm_pool,
                                 warm_pool_max=settings.warm_pool_max,
                                 warm_pool_memory_mib=settings.warm_pool_memory_mib,
                                 max_streams=settings.max_streams)
        from runtimes import GpuAllocator, host_inventory

        inventory = gpus if gpus is not None else await asyncio.to_thread(host_inventory)
        manager.gpus = GpuService(GpuAllocator(settings.path("gpus.json"), inventory), runtime)
        app.state.audit = AuditLog(settings.path("audit.db"))
        app.state.keys = KeyStore(settings.path("keys.db"))
        await manager.start()  # reaps leftover build containers before layers are cleaned
        await image_service.start()
        functions = FunctionService(manager=manager, store=store, home=settings.home,
                                    retention_s=settings.call_retention_s,
                                    default_max_containers=settings.function_max_containers,
                                    wheel_cache=settings.wheel_cache,
                                    web_domain=settings.web_domain,
                                    web_scheme=settings.web_scheme)
        functions.relay = http_relay(app)
        functions.relay_ws = ws_relay(app)
        await functions.start()
        app.state.functions = functions
        kv = KvService(store)
        await kv.start()
        app.state.kv = kv
        volumes = VolumeService(kv, root=settings.path("volumes"),
                                quota_mib=settings.volume_quota_mib)
        manager.volumes = volumes
        app.state.volumes = volumes
        schedules = ScheduleService(functions)
        functions.schedules = schedules
        await schedules.start()
        app.state.loop = asyncio.get_running_loop()
        app.state.manager = manager
        app.state.image_service = image_service
        app.state.runtime = runtime
        app.state.images = images
        log.info("sbx %s serving with runtime %s; home %s", __version__, runtime.name, settings.home)
        try:
            async with mcp_lifespan():  # MCP sessions end (and clean up) before the manager
                yield
        finally:
            await schedules.close()
            await functions.stop()  # function containers end before the sandboxes' manager
            await kv.close()
            await app.state.audit.close()
            await app.state.keys.close()
            await image_service.stop()  # builds end (their sandboxes and mounts too) first
            await manager.stop()
            await volumes.close()  # after every container that could mount one
            await store.close()
            await runtime.close()
            os.close(home_lock)

    app = FastAPI(title="sandbox-service", version=__version__, lifespan=lifespan,
                  description="gVisor sandboxes for agents and the functions they call.",
                  responses=ERROR_RESPONSES)
    app.state.settings = settings
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.state.token = token
    app.state.audit = None
    app.state.keys = None

    @app.middleware("http")
    async def auth(request: Request, call_next):
        path = request.url.path
        if not path.startswith("/v1/"):
            return await call_next(request)
        too_big = _body_too_large(request)
        if too_big:
            return JSONResponse(too_big.to_wire(), status_code=too_big.http_status)
        try:  # a call from inside a function container arrives in-process, as its principal
            principal = request.scope.get("sbx.principal") or await access.authenticate(request)
        except E.AuthenticationError as e:
            return JSONResponse(e.to_wire(), status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        try:
            await access.authorize(request, principal)
        except E.SandboxError as e:
            audit_request(request, e.http_status)
            return JSONResponse(e.to_wire(), status_code=e.http_status)
        response = await call_next(request)
        audit_request(request, response.status_code)
        return response

    app.add_middleware(WebIngress, domain=settings.web_domain,  # web endpoints: not the API
                       require_auth=settings.web_require_auth,
                       max_body=settings.web_max_body_mib << 20)
    app.add_middleware(StallGuard, stall_s=settings.stream_stall_s)  # outermost

    @app.exception_handler(E.SandboxError)
    async def sandbox_error(_: Request, exc: E.SandboxError):
        return JSONResponse(exc.to_wire(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        return JSONResponse(E.InvalidRequestError(validation_message(exc)).to_wire(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=exc.headers)  # 405: Allow

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(E.SandboxError(f"internal error: {type(exc).__name__}: {exc}").to_wire(),
                            status_code=500)

    from agent_tools import mount_mcp

    mcp_lifespan = mount_mcp(  # /mcp: streamable HTTP, the REST API's tokens
        app, resolve=lambda tok: access.resolve(app, tok), host=settings.host, port=settings.port,
        terminate=lambda sid: app.state.manager.terminate(sid),
        public_url=settings.mcp.public_url, loopback=settings.mcp.loopback_url,
        allowed_hosts=settings.mcp.allowed_hosts, idle_s=settings.mcp.idle_s,
        sweep_s=settings.mcp.sweep_s)

    include_routes(app)
    return app
