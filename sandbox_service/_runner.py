"""The function runner: the main process of a function container (runs INSIDE the sandbox).

Started by the server as `python3 -c "...; from sandbox_service._runner import main; main()"`
with the SDK mounted read-only at /.sbx/sdk (the image needs nothing installed). It listens
on the container's own loopback (`wire.RUNNER_PORT`); the server reaches it through the
agent, so no network is needed. The server sends `init` (which function or class, its
parameters, its concurrency), then inputs; the runner imports the user's module once, runs
`@enter` once, serves inputs on threads (sync) or one event loop (async) up to `max_inputs`
at a time, batches for `@batched`, and runs `@exit` on `stop`. Calls the user's code makes
to the service (`other.remote()`, `Sandbox.create`, ...) travel back over the same
connection as `api` frames: the server runs them as this container's identity.

Frames: `wire.encode_frame`. Arguments and results are cloudpickle; exceptions travel
pickled when they can be, always with their formatted traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import importlib
import inspect
import os
import socket
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from . import _serialization as S
from .wire import encode_frame

_LEN = 4


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv_frame(sock: socket.socket) -> tuple[dict | None, bytes]:
    import json

    head = _recv_exact(sock, _LEN)
    if head is None:
        return None, b""
    header = _recv_exact(sock, int.from_bytes(head, "big"))
    blen = _recv_exact(sock, _LEN)
    if header is None or blen is None:
        return None, b""
    n = int.from_bytes(blen, "big")
    body = _recv_exact(sock, n) if n else b""
    if body is None:
        return None, b""
    return json.loads(header), body


class Runner:
    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.wlock = threading.Lock()
        self.target: Any = None          # the function, or the class instance
        self.spec: dict[str, Any] = {}
        self.ready = threading.Event()
        self.pool: ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running: dict[str, Any] = {}  # input id -> thread ident or asyncio task
        self.batchers: dict[str, Any] = {}
        self.api_waiters: dict[int, Any] = {}
        self.ws_handlers: dict[int, Any] = {}
        self.web: Any = None             # _runner_web.WebServer of a web endpoint
        self.api_seq = 0
        self.stopping = False
        self.pending: list[tuple[dict[str, Any], bytes]] = []

    # ---- transport ---------------------------------------------------------------------
    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        data = encode_frame(header, body)
        with self.wlock:
            if self.sock is not None:
                try:
                    self.sock.sendall(data)
                except OSError:
                    pass

    def serve(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(4)
        while True:
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.wlock:
                old, self.sock = self.sock, conn
            if old is not None:
                try:
                    old.close()
                except OSError:
                    pass
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                header, body = _recv_frame(conn)
            except (OSError, ValueError):
                header = None
            if header is None:
                return
            kind = header.get("t")
            if kind == "init":
                threading.Thread(target=self._init, args=(header,), daemon=True).start()
            elif kind == "input":
                with self.wlock:
                    if not self.ready.is_set():  # init still runs (it may call the API)
                        self.pending.append((header, body))
                        continue
                self._submit(header, body)
            elif kind == "cancel":
                self._cancel(str(header.get("id")))
            elif kind == "api_resp":
                waiter = self.api_waiters.pop(int(header.get("rid", -1)), None)
                if waiter is not None:
                    waiter(header, body)
            elif kind in ("asgi_start", "asgi_in", "asgi_cancel"):
                if self.web is not None:
                    self.web.frame(header, body)
            elif kind in ("ws_opened", "ws_refused", "ws_msg", "ws_close"):
                handler = self.ws_handlers.get(int(header.get("wid", -1)))
                if handler is not None:
                    handler(header, body)
            elif kind == "stop":
                threading.Thread(target=self._stop, daemon=True).start()

    # ---- init and exit -----------------------------------------------------------------
    def _init(self, header: dict[str, Any]) -> None:
        spec = self.spec = header["spec"]
        try:
            self.target = _load_target(spec)
            _hydrate_apps(spec)
            if spec.get("is_class"):
                params = S.loads(base64.b64decode(spec["params_b64"])) if spec.get(
                    "params_b64") else {}
                self.target = _construct(self.target, params)
                for fn in _lifecycle(type(self.target), "enter"):
                    _call_sync(fn, self.target)
            max_inputs = int(spec.get("max_inputs") or 1) * int(spec.get("batch_max_size") or 1)
            self.pool = ThreadPoolExecutor(max_inputs, thread_name_prefix="input")
            self._start_loop()
            if spec.get("web") and spec["web"]["kind"] == "server":
                from ._runner_web import start_web_server

                start_web_server(spec["web"], self._web_callable(spec["web"]))
            elif spec.get("web"):
                from ._runner_web import WebServer, build_app

                assert self.loop is not None
                self.web = WebServer(build_app(spec["web"], self._web_callable(spec["web"])),
                                     self.send, self.loop)
                asyncio.run_coroutine_threadsafe(self.web.startup(), self.loop).result(300)
        except BaseException:
            self.send({"t": "init_failed", "traceback": _user_traceback()})
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)
        self.send({"t": "ready", "pid": os.getpid()})
        with self.wlock:
            self.ready.set()
            pending, self.pending = self.pending, []
        for header, body in pending:
            self._submit(header, body)

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="async-inputs", daemon=True).start()
        self.loop = loop

    def _stop(self) -> None:
        self.stopping = True
        if self.web is not None and self.loop is not None:
            with contextlib.suppress(BaseException):
                asyncio.run_coroutine_threadsafe(self.web.shutdown(), self.loop).result(10)
        if self.spec.get("is_class") and self.target is not None:
            for fn in _lifecycle(type(self.target), "exit"):
                try:
                    _call_sync(fn, self.target)
                except BaseException:
                    traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        self.send({"t": "stopped"})
        os._exit(0)

    # ---- inputs ------------------------------------------------------------------------
    def _callable(self, method: str | None) -> Callable:
        if self.spec.get("is_class"):
            raw = _raw_method(type(self.target), method or "")
            return raw.__get__(self.target, type(self.target))
        return self.target

    def _web_callable(self, web: dict[str, Any]) -> Callable:
        """The function (or, of a class, the bound method) behind the web endpoint."""
        if not self.spec.get("is_class"):
            return self.target
        raw = inspect.getattr_static(type(self.target), web["attr"])
        return getattr(raw, "raw_f", raw).__get__(self.target, type(self.target))

    def _submit(self, header: dict[str, Any], body: bytes) -> None:
        iid = str(header["id"])
        try:
            fn = self._callable(header.get("method"))
        except BaseException as e:
            self._fail(iid, e)
            return
        batch = self.spec.get("batch_max_size")
        if batch:
            key = header.get("method") or ""
            b = self.batchers.get(key)
            if b is None:
                from ._runner_batch import Batcher

                b = self.batchers[key] = Batcher(self, fn, int(batch),
                                                 int(self.spec.get("batch_wait_ms") or 0))
            b.add(iid, body)
            return
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            assert self.loop is not None
            fut = asyncio.run_coroutine_threadsafe(self._run_async(iid, fn, body), self.loop)
            self.running[iid] = fut
        else:
            assert self.pool is not None
            self.pool.submit(self._run_sync, iid, fn, body)

    def _run_sync(self, iid: str, fn: Callable, body: bytes) -> None:
        self.running[iid] = threading.get_ident()
        _set_current(iid)
        try:
            args, kwargs = S.loads(body)
            result = fn(*args, **kwargs)
            if inspect.isgenerator(result):
                for item in result:
                    self.send({"t": "item", "id": iid}, S.dumps(item))
                result = None
            self._succeed(iid, result)
        except BaseException as e:
            self._fail(iid, e)
        finally:
            self.running.pop(iid, None)

    async def _run_async(self, iid: str, fn: Callable, body: bytes) -> None:
        _set_current(iid)  # this task's own context
        try:
            args, kwargs = S.loads(body)
            if inspect.isasyncgenfunction(fn):
                async for item in fn(*args, **kwargs):
                    self.send({"t": "item", "id": iid}, S.dumps(item))
                result = None
            else:
                result = await fn(*args, **kwargs)
            self._succeed(iid, result)
        except BaseException as e:
            self._fail(iid, e)
        finally:
            self.running.pop(iid, None)

    def _succeed(self, iid: str, result: Any) -> None:
        try:
            data = S.dumps(result)
        except BaseException as e:
            self.send({"t": "out", "id": iid, "status": "failure",
                       "message": f"the result could not be pickled: {type(e).__name__}: {e}",
                       "traceback": _user_traceback()})
            return
        self.send({"t": "out", "id": iid, "status": "success"}, data)

    def _fail(self, iid: str, exc: BaseException) -> None:
        from .exception import InputCancellation

        if isinstance(exc, (InputCancellation, asyncio.CancelledError)):
            self.send({"t": "out", "id": iid, "status": "cancelled"})
            return
        if isinstance(exc, ImportError) and "pydantic_core" in str(exc) and hasattr(exc, "add_note"):
            exc.add_note(
                f"This image's Python {sys.version_info[0]}.{sys.version_info[1]} has no "
                "pydantic_core build in the SDK the server mounts, so calls to the service "
                "from here fail: on the server, run scripts/fetch-sdk-wheels.sh (it fills "
                "SBX_WHEEL_CACHE) and restart it, or pip_install('pydantic>=2') in the image")
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.send({"t": "out", "id": iid, "status": "failure",
                   "message": f"{type(exc).__name__}: {exc}"[:4000], "traceback": tb[-64000:]},
                  S.dump_exception(exc))

    def _cancel(self, iid: str) -> None:
        from .exception import InputCancellation

        handle = self.running.get(iid)
        if isinstance(handle, int):  # a thread: raise InputCancellation in it
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(handle),
                                                       ctypes.py_object(InputCancellation))
        elif handle is not None:
            handle.cancel()

    # ---- calls from the user's code back to the service --------------------------------
    def api_call(self, header: dict[str, Any], body: bytes, on_reply: Callable) -> None:
        with self.wlock:
            self.api_seq += 1
            rid = self.api_seq
        self.api_waiters[rid] = on_reply
        self.send({**header, "t": "api", "rid": rid}, body)

    def ws_open(self, path: str, on_frame: Callable) -> int:
        """Open a WebSocket to the API (`path`) over this connection; `on_frame` gets its
        `ws_*` frames on the read thread until `ws_done`."""
        with self.wlock:
            self.api_seq += 1
            wid = self.api_seq
        self.ws_handlers[wid] = on_frame
        self.send({"t": "ws_open", "wid": wid, "path": path})
        return wid

    def ws_done(self, wid: int) -> None:
        self.ws_handlers.pop(wid, None)


def _set_current(iid: str) -> None:
    """modal.current_function_call_id() / current_input_id() for the input `iid`
    ("<call id>:<index>:<attempt>"): the input id is the same across retries."""
    from ._app import CURRENT_INPUT

    call_id, _, rest = iid.partition(":")
    index = rest.partition(":")[0]
    CURRENT_INPUT.set((call_id, f"in-{call_id.removeprefix('fc-')}-{index}"))


def _load_target(spec: dict[str, Any]) -> Any:
    if spec.get("serialized_b64"):
        obj = S.loads(base64.b64decode(spec["serialized_b64"]))
    else:
        module = importlib.import_module(spec["module"])
        obj = module
        for part in spec["qualname"].split("."):
            obj = getattr(obj, part)
    # the SDK's wrappers hold the user's own function or class
    for attr in ("_sbx_user_cls", "_sbx_raw_f"):
        inner = getattr(obj, attr, None)
        if inner is not None:
            return inner
    return obj


def _hydrate_apps(spec: dict[str, Any]) -> None:
    """Give the module's apps their functions' ids and the app's id, so the user's code
    can call its siblings (`other.remote()`) and make sandboxes in its app as outside."""
    ids = spec.get("app_functions") or {}
    module = sys.modules.get(spec.get("module") or "")
    if not ids or module is None:
        return
    from ._app import App, _AsyncApp

    for value in list(vars(module).values()):
        impl = value._impl if isinstance(value, App) else value
        if not isinstance(impl, _AsyncApp):
            continue
        mine = False
        for tag, target in (*impl._functions.items(), *impl._classes.items()):
            if tag in ids and target._function_id is None:
                target._function_id = ids[tag]
                mine = True
        if mine and impl.app_id is None:  # Sandbox.create(app=app) joins this app run
            impl.app_id = spec.get("app_id")


def _construct(cls: type, params: dict[str, Any]) -> Any:
    from ._cls import construct_instance

    return construct_instance(cls, params)


def _lifecycle(cls: type, kind: str) -> list[Callable]:
    from ._cls import lifecycle_methods

    return lifecycle_methods(cls, kind)


def _raw_method(cls: type, name: str) -> Callable:
    from ._cls import raw_method

    return raw_method(cls, name)


def _call_sync(fn: Callable, obj: Any) -> Any:
    result = fn(obj)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def _user_traceback() -> str:
    etype, value, tb = sys.exc_info()
    return "".join(traceback.format_exception(etype, value, tb))[-64000:]


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except AttributeError:
        pass
    port = int(sys.argv[1])  # the server passes wire.RUNNER_PORT
    runner = Runner(port)
    from . import _client

    _client.set_container_channel(runner)
    if "/root" not in sys.path:
        sys.path.insert(0, "/root")
    runner.serve()
