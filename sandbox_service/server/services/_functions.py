"""Functions and classes (server layer): deployments, calls, and the containers that serve
them.

- `deploy` registers an app's functions: an ephemeral run (ends with `stop_app`) or a
  deployment (named, versioned: a redeploy makes new function ids, points the app's names
  at them, and lets the old version finish the calls it has before its containers go).
- `create_call` / `add_inputs` queue inputs on the function's `Pool` (one per function and
  class-parameter set); `outputs` is the long-poll readers use; `cancel` ends a call.
- A function container is a sandbox of the same `SandboxManager` (same images, limits,
  secrets, network policy, audit) whose main command is the SDK's runner
  (`sandbox_service._runner`), with the SDK mounted read-only (_sdk_mount.py).
- Calls the user's code makes from inside a container arrive as `api` frames on the
  runner's connection and run through the API in-process as the container's principal
  (its owner, scoped to its app); `restrict_modal_access=True` refuses them all.
- Calls, inputs and outputs are written through to the store: a restarted server runs the
  inputs that were queued, and ends (or retries, per `Retries`) the ones that were running
  with a `terminated` output that says so; nothing runs twice silently.
Payloads are opaque bytes; nothing here unpickles them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import time
from typing import Any, Awaitable, Callable

from security import Principal

from ...wire import (
    MAX_TIMEOUT_S,
    RUNNER_PORT,
    CallCreate,
    CallInputs,
    CallOutput,
    CallOutputs,
    ContainerSummary,
    FunctionInfo,
    FunctionSpec,
    SandboxCreate,
    check_payload,
    is_id,
    new_id,
)
from ...wire import errors as E
from ._fn_apps import AppsMixin
from ._fn_calls import FINAL, CallState, InputRef
from ._fn_logs import AppLogs
from ._fn_pool import Pool
from ._fn_runner import RUNNER_BOOT, RunnerConn
from ._fn_web import WebMixin
from ._sdk_mount import build_sdk_mount

log = logging.getLogger("sbx.functions")
FUNCTION_TAG = "sbx.function"
_RELAYED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
Relay = Callable[[Principal, str, str, "str | None", bytes], Awaitable[tuple[int, str, bytes]]]


class FunctionService(AppsMixin, WebMixin):
    def __init__(self, *, manager: Any, store: Any, home: str, retention_s: float = 86400.0,
                 default_max_containers: int | None = None, wheel_cache: str | None = None,
                 web_domain: str | None = None, web_scheme: str = "http"):
        self.manager = manager
        self.runtime = manager.runtime
        self.store = store
        self.home = home
        self.retention_s = retention_s
        # a function without max_containers: at most this many (one machine, not a cloud)
        self.default_max_containers = default_max_containers or max(4, 2 * (os.cpu_count() or 1))
        self.functions: dict[str, dict[str, Any]] = {}   # function id -> record
        self.pools: dict[tuple[str, str | None], Pool] = {}
        self.calls: dict[str, CallState] = {}
        self.logs = AppLogs(manager)
        self.relay: Relay | None = None
        self.relay_ws: Callable[..., Awaitable[None]] | None = None
        self.schedules: Any = None  # ScheduleService, set by the app
        self.web_labels: dict[str, str] = {}         # web endpoint label -> function id
        self.web_claims: dict[str, str] = {}
        self.web_domain, self.web_scheme = web_domain, web_scheme
        self.web_stats: dict[str, dict[str, Any]] = {}
        self._mount: tuple[str, str] | None = None
        self.wheel_cache = wheel_cache
        self._tasks: list[asyncio.Task] = []
        self.stopping = asyncio.Event()

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._mount = await asyncio.to_thread(build_sdk_mount, self.home, self.wheel_cache)
        stale = [rec.sandbox_id for rec in await self.manager.store.list_sandboxes(
            states=("creating", "running")) if FUNCTION_TAG in rec.tags]
        if stale:  # containers of the last server (their runner connections are gone)
            self._tasks.append(asyncio.create_task(asyncio.wait(
                [asyncio.create_task(self.terminate(sid)) for sid in stale])))
        for fn in await self.store.list_functions():
            if fn.get("state") in ("active", "draining"):
                self.functions[fn["function_id"]] = fn
            if fn.get("state") == "active" and fn.get("web_label"):
                self.web_labels[fn["web_label"]] = fn["function_id"]
        for rec in await self.store.open_calls():
            await self._recover(rec)
        for fn in self.functions.values():
            if fn["state"] == "active" and fn["spec"].get("min_containers"):
                self._pool(fn, None)
        self._tasks.append(asyncio.create_task(self._sweep()))

    async def _until_stopping(self, coro: Any) -> None:
        """Await `coro` (a long-poll), or less: until the server starts to stop, so
        long-polls never hold a shutdown up."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stop):
                t.cancel()

    async def stop(self) -> None:
        self.stopping.set()
        for t in self._tasks:
            t.cancel()
        self.logs.close()
        await asyncio.gather(*(p.close("the server is stopping") for p in self.pools.values()),
                             return_exceptions=True)
        self.pools.clear()

    async def _recover(self, rec: dict[str, Any]) -> None:
        call = CallState.from_record(rec)
        fn = self.functions.get(call.function_id) or await self.store.get_function(call.function_id)
        old = await self.store.get_outputs(call.call_id, 0, limit=1_000_000)
        for out in old:
            call.outputs.append(out)
            if out["status"] in FINAL:
                call.finished.add(out["index"])
        self.calls[call.call_id] = call
        attempts = await self.store.input_attempts(call.call_id)
        for idx in range(call.inputs):
            if idx in call.finished:
                continue
            if fn is None or fn.get("state") == "stopped" or call.cancelled:
                await self._finish_now(call, idx, "cancelled", "its app was stopped")
                continue
            args = await self.store.get_input(call.call_id, idx)
            ref = InputRef(call, idx, args or b"", attempt=attempts.get(idx, 0))
            if ref.attempt > 0:  # it was running when the server went down
                retries = fn["spec"].get("retries") or {}
                if ref.attempt > int(retries.get("max_retries", 0)):
                    await self._finish_now(call, idx, "terminated", (
                        "the server restarted while this input ran, and its function has no "
                        "retries left: it was not run again"))
                    continue
                log.info("call %s input %d was running at restart: retrying", call.call_id, idx)
            self._pool(fn, call.params_b64, call.overrides).submit(ref)
        await self._persist_call(call)

    async def _finish_now(self, call: CallState, idx: int, status: str, message: str) -> None:
        out = call.add_output(idx, status, message=message)
        if out is not None:
            await self.store.put_output(call.call_id, out)

    async def _sweep(self) -> None:
        """Forget finished calls: from memory after 10 minutes, from the store after the
        retention (`SBX_CALL_RETENTION_S`)."""
        while True:
            await asyncio.sleep(60)
            now = time.time()
            for cid, call in list(self.calls.items()):
                if call.done and now - call.last_touch > 600:
                    del self.calls[cid]
            with contextlib.suppress(Exception):
                await self.store.delete_calls_before(now - self.retention_s)

    # ---- functions -------------------------------------------------------------------------
    async def function(self, who: Principal, fid: str) -> dict[str, Any]:
        fn = self.functions.get(fid) or await self.store.get_function(fid)
        if fn is None or not (who.is_admin or fn["owner"] == who.name):
            raise E.NotFoundError(f"no function {fid!r}")
        if fn["state"] == "draining":  # a redeploy replaced it: calls go to the new version
            app = await self.store.get_app(fn["app_id"])
            new = app.functions.get(fn["name"]) if app else None
            if new and new in self.functions:
                return self.functions[new]
        if fn["state"] == "stopped":
            raise E.NotFoundError(f"function {fn['name']} ({fid}) belongs to an app that was "
                                  "stopped: run or deploy the app again")
        return fn

    def app_functions(self, app_id: str) -> dict[str, str]:
        """name -> id of the app's current functions: a container's copy of the app gets
        them, so its code can call its siblings (`other.remote()`)."""
        return {fn["name"]: fid for fid, fn in self.functions.items()
                if fn["app_id"] == app_id and fn["state"] == "active"}

    def info(self, fn: dict[str, Any]) -> FunctionInfo:
        stats = {"containers": 0, "queued": 0, "running": 0}
        for (fid, _), p in self.pools.items():
            if fid == fn["function_id"]:
                for k, v in p.stats().items():
                    stats[k] += v
        spec = fn["spec"]
        return FunctionInfo(function_id=fn["function_id"], app_id=fn["app_id"],
                            app_name=fn.get("app_name"), name=fn["name"],
                            version=fn["version"], is_class=spec["is_class"],
                            methods=spec["methods"], generators=spec["generators"],
                            state=fn["state"], web_url=self.web_url(fn),
                            **self.web_meter(fn["function_id"]), **stats)

    async def lookup(self, who: Principal, app_name: str, name: str) -> dict[str, Any]:
        app = await self.store.get_app_by_name(who.name, app_name)
        if app is None or app.state != "deployed":
            raise E.NotFoundError(f"no deployed app named {app_name!r}: deploy it with "
                                  "`sbx deploy <file.py>` (or app.deploy())")
        fid = app.functions.get(name)
        if fid is None:
            raise E.NotFoundError(f"app {app_name!r} has no function or class {name!r}; it has "
                                  f"{sorted(app.functions)}")
        return await self.function(who, fid)

    def _pool(self, fn: dict[str, Any], params_b64: str | None,
              overrides: dict[str, Any] | None = None) -> Pool:
        """The pool of one function, class-parameter set and option overrides."""
        pkey = None
        if params_b64 or overrides:
            pkey = hashlib.sha256(json.dumps([params_b64, overrides], sort_keys=True)
                                  .encode()).hexdigest()
        key = (fn["function_id"], pkey)
        pool = self.pools.get(key)
        if pool is None or pool.closed:
            if overrides:
                fn = {**fn, "spec": _override(fn["spec"], overrides)}
            pool = self.pools[key] = Pool(self, fn, params_b64)
            pool.start()
        return pool

    # ---- calls -----------------------------------------------------------------------------
    async def create_call(self, who: Principal, fid: str, body: CallCreate) -> CallState:
        fn = await self.function(who, fid)
        spec = fn["spec"]
        if spec["is_class"]:
            if body.method not in spec["methods"]:
                raise E.InvalidRequestError(f"{fn['name']} has no method {body.method!r}; its "
                                            f"methods are {spec['methods']}")
        elif body.method is not None:
            raise E.InvalidRequestError(f"{fn['name']} is a function, not a class")
        check_payload(body.params_b64, "the class parameters")
        if body.overrides:
            try:
                FunctionSpec(**_override(spec, body.overrides))
            except ValueError as e:
                raise E.InvalidRequestError(f"with_options: {e}") from None
        call = CallState(call_id=new_id("function_call"), function_id=fn["function_id"], owner=fn["owner"],
                         kind=body.kind, created_at=time.time(), method=body.method,
                         params_b64=body.params_b64, overrides=body.overrides)
        self.calls[call.call_id] = call
        await self._add(call, fn, body.inputs_b64, body.closed)
        return call

    async def _add(self, call: CallState, fn: dict[str, Any], inputs_b64: list[str],
                   closed: bool) -> None:
        if call.closed:
            raise E.ConflictError(f"call {call.call_id} takes no more inputs")
        blobs = []
        for i, item in enumerate(inputs_b64):
            check_payload(item, f"input {call.inputs + i}")
            try:
                blobs.append(base64.b64decode(item, validate=True))
            except ValueError:
                raise E.InvalidRequestError(f"input {call.inputs + i} is not base64") from None
        first = call.inputs
        call.inputs += len(blobs)
        call.closed = closed
        await self.store.put_call(call.record(), [(first + i, b) for i, b in enumerate(blobs)])
        if call.cancelled:
            return
        pool = self._pool(fn, call.params_b64, call.overrides)
        for i, b in enumerate(blobs):
            pool.submit(InputRef(call, first + i, b))
        if closed:
            await call.notify()

    async def add_inputs(self, who: Principal, call_id: str, body: CallInputs) -> CallState:
        call = await self.call(who, call_id)
        fn = await self.function(who, call.function_id)
        await self._add(call, fn, body.inputs_b64, body.closed)
        return call

    async def call(self, who: Principal, call_id: str) -> CallState:
        call = self.calls.get(call_id)
        if call is None:
            rec = await self.store.get_call(call_id) if is_id("function_call", call_id) else None
            if rec is None:
                raise E.OutputExpiredError(
                    f"no function call {call_id!r}: results are kept for "
                    f"{self.retention_s / 3600:g} hours (SBX_CALL_RETENTION_S)")
            call = CallState.from_record(rec)
            call.finished = set(range(call.inputs)) if rec.get("finished") else set()
        if not (who.is_admin or call.owner == who.name):
            raise E.NotFoundError(f"no function call {call_id!r}")
        return call

    async def outputs(self, who: Principal, call_id: str, after_seq: int,
                      timeout_s: float) -> CallOutputs:
        call = await self.call(who, call_id)
        if call_id in self.calls:
            await self._until_stopping(call.wait(after_seq, min(timeout_s, 55.0)))
            outs = call.since(after_seq) if after_seq >= call.first_seq else \
                await self.store.get_outputs(call_id, after_seq)
        else:
            outs = await self.store.get_outputs(call_id, after_seq)
        wire = [CallOutput(index=o["index"], status=o["status"],
                           data_b64=base64.b64encode(o["data"]).decode() if o.get("data") else None,
                           message=o.get("message"), traceback=o.get("traceback"))
                for o in outs]
        next_seq = outs[-1]["seq"] + 1 if outs else after_seq
        done = call.done and next_seq >= (call.next_seq if call_id in self.calls else next_seq)
        return CallOutputs(outputs=wire, next_seq=next_seq, done=done, inputs=call.inputs,
                           closed=call.closed)

    async def cancel(self, who: Principal, call_id: str, terminate: bool = False) -> CallState:
        call = await self.call(who, call_id)
        if call.done:
            return call
        call.cancelled = True
        call.closed = True
        for pool in list(self.pools.values()):
            if pool.fn["function_id"] != call.function_id:
                continue
            for conn in list(pool.containers.values()):
                for ref in [r for r in conn.inflight.values() if r.call is call]:
                    await pool.cancel_input(ref, terminate)
        for idx in range(call.inputs):
            if idx not in call.finished:
                await self._finish_now(call, idx, "cancelled", "the function call was cancelled")
        await self._persist_call(call)
        await call.notify()
        return call

    async def _persist_call(self, call: CallState) -> None:
        await self.store.put_call(call.record(), [])

    # ---- pool callbacks --------------------------------------------------------------------
    def finish(self, ref: InputRef, status: str, *, data: bytes | None = None,
               message: str | None = None, traceback: str | None = None) -> None:
        call = ref.call
        out = call.add_output(ref.index, status, data=data, message=message, traceback=traceback)
        if out is None:
            return
        asyncio.get_running_loop().create_task(self._after_output(call, out))

    def item(self, ref: InputRef, data: bytes) -> None:
        out = ref.call.add_output(ref.index, "item", data=data)
        if out is not None:
            asyncio.get_running_loop().create_task(self._after_output(ref.call, out))

    async def _after_output(self, call: CallState, out: dict[str, Any]) -> None:
        await call.notify()
        try:
            await self.store.put_output(call.call_id, out)
            if call.done:
                await self._persist_call(call)
        except Exception:
            log.exception("storing an output of %s", call.call_id)

    async def input_started(self, ref: InputRef) -> None:
        await self.store.input_started(ref.call.call_id, ref.index, ref.attempt)

    async def create_container(self, fn: dict[str, Any], params_b64: str | None) -> str:
        spec = FunctionSpec(**fn["spec"])
        assert self._mount is not None
        sdk, deps = self._mount
        req = SandboxCreate(
            image=spec.image, command=["python3", "-c", RUNNER_BOOT, str(_port())],
            timeout_s=MAX_TIMEOUT_S, workdir="/root", env=dict(spec.env), cpu=spec.cpu,
            memory_mib=spec.memory_mib, disk_mib=spec.disk_mib, app_id=fn["app_id"],
            tags={FUNCTION_TAG: fn["function_id"], "sbx.function_name": fn["name"]},
            block_network=spec.block_network, cidr_allowlist=spec.cidr_allowlist,
            secret_names=list(spec.secret_names), volumes=list(spec.volumes), gpu=spec.gpu,
            encrypted_ports=[spec.web.port] if spec.web and spec.web.kind == "server"
            and spec.web.port else [])
        rec = await self.manager.create(req, owner=fn["owner"],
                                        mounts=((sdk, "/.sbx/sdk"), (deps, "/.sbx/sdk-deps")))
        self.logs.follow(fn["app_id"], rec.sandbox_id)
        return rec.sandbox_id

    async def open_port(self, sandbox_id: str, port: int):
        return await self.runtime.open_port(sandbox_id, port)

    async def alive(self, sandbox_id: str) -> bool:
        return self.manager.is_live(sandbox_id)

    async def terminate(self, sandbox_id: str) -> None:
        with contextlib.suppress(E.SandboxError):
            await self.manager.terminate(sandbox_id)

    async def container_exit_detail(self, sandbox_id: str) -> str:
        tail = await asyncio.to_thread(self.logs.tail, sandbox_id)
        return f". Its last output:\n{tail}" if tail else ""

    def container_started(self, pool: Pool, conn: RunnerConn) -> None:
        log.info("function %s: container %s ready", pool.fn["name"], conn.sandbox_id)

    def container_stopped(self, pool: Pool, conn: RunnerConn) -> None:
        log.info("function %s: container %s stopped", pool.fn["name"], conn.sandbox_id)

    def _relay_refusal(self, fn: dict[str, Any], method: str,
                       path: str) -> E.SandboxError | None:
        if fn["spec"].get("restrict_modal_access"):
            return E.PermissionDeniedError(
                f"{fn['name']} has restrict_modal_access=True: its code may not call the "
                "service (other functions, sandboxes, ...)")
        bare = path.split("?", 1)[0]
        if (not bare.startswith("/v1/") or "%" in bare
                or posixpath.normpath(bare) != bare.rstrip("/")  # no /v1/../ escapes
                or method not in _RELAYED_METHODS):
            return E.InvalidRequestError(f"{method} {path[:100]}: not an API path")
        return None

    async def relay_api(self, fn: dict[str, Any], header: dict[str, Any],
                        body: bytes) -> tuple[int, str, bytes]:
        """A call the user's code made inside a container, run as the container."""
        path, method = str(header.get("path", "")), str(header.get("method", "GET"))
        err = self._relay_refusal(fn, method, path) or (
            None if self.relay else E.InvalidRequestError("no API relay in this server"))
        if err is None:
            who = Principal(fn["owner"], scope="app", target=fn["app_id"])
            try:
                return await self.relay(who, method, path, header.get("content_type"), body)
            except Exception as e:
                log.exception("relaying %s %s for %s", method, path, fn["name"])
                err = E.SandboxError(f"the call failed in the server: {e}")
        return err.http_status, "application/json", json.dumps(err.to_wire()).encode()

    async def relay_stream(self, fn: dict[str, Any], path: str, inbox: asyncio.Queue,
                           emit: Callable[[dict, bytes], Awaitable[None]]) -> None:
        """A WebSocket the user's code opened inside a container (an exec stream, a port
        forward), run as the container until either end closes it."""
        err = self._relay_refusal(fn, "GET", path) or (
            None if self.relay_ws else E.InvalidRequestError("no API relay in this server"))
        if err is not None:
            await emit({"t": "ws_refused", "status": err.http_status},
                       json.dumps(err.to_wire()).encode())
            return
        assert self.relay_ws is not None
        await self.relay_ws(Principal(fn["owner"], scope="app", target=fn["app_id"]),
                            path, inbox, emit)

    def containers(self, who: Principal, app_id: str | None = None) -> list[ContainerSummary]:
        out = []
        for (fid, _), pool in self.pools.items():
            fn = pool.fn
            if app_id and fn["app_id"] != app_id or not (who.is_admin or fn["owner"] == who.name):
                continue
            for c in pool.containers.values():
                out.append(ContainerSummary(container_id=c.sandbox_id, function_id=fid,
                                            app_id=fn["app_id"], function_name=fn["name"],
                                            state=c.state, started_at=c.started_at,
                                            running_inputs=c.load))
        return out

    async def stop_container(self, who: Principal, sandbox_id: str) -> None:
        for pool in self.pools.values():
            conn = pool.containers.get(sandbox_id)
            if conn is not None and (who.is_admin or pool.fn["owner"] == who.name):
                await pool._kill(conn, "stopped by request")
                return
        raise E.NotFoundError(f"no function container {sandbox_id!r}: `sbx container ls`")


def _override(spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """with_options: the overrides replace the spec's fields, except env and secrets, which
    they add to (as Modal's)."""
    out = {**spec, **overrides}
    if "env" in overrides:
        out["env"] = {**spec.get("env", {}), **overrides["env"]}
    if "secret_names" in overrides:
        out["secret_names"] = list(dict.fromkeys([*spec.get("secret_names", []),
                                                  *overrides["secret_names"]]))
    return out


def _port() -> int:
    return RUNNER_PORT
