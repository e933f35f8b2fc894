"""Web endpoints inside a function container (runs INSIDE the sandbox, with the runner).

The server relays each HTTP request or WebSocket as ASGI messages on the runner's
connection: `asgi_start` (the scope), `asgi_in` (what the client sends), `asgi_cancel`;
this module runs the endpoint's ASGI app on the runner's event loop and answers with
`asgi_out` (what the app sends) and `asgi_end`. Byte fields (`body`, `bytes`) travel as
the frame's body, the rest as JSON. No HTTP server runs in the container and no network is
needed. `build_app` turns the function into the ASGI app once per container:
- `asgi`: the function returns an ASGI app;
- `wsgi`: the function returns a WSGI app, served on threads (`_wsgi_to_asgi`);
- `fastapi`: the function itself becomes the one route at "/" of a FastAPI app (FastAPI
  must be in the image, as in Modal).
Stdlib only (FastAPI only for `fastapi` endpoints).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import traceback
from typing import Any, Callable

from .wire import ASGI_BYTES as _BYTES

FRAME_BODY = 1 << 20   # a response body travels in frames of at most this


def build_app(web: dict[str, Any], fn: Callable) -> Any:
    kind = web["kind"]
    if kind == "fastapi":
        try:
            from fastapi import FastAPI
        except ImportError:
            raise ImportError("@modal.fastapi_endpoint needs FastAPI in the function's image: "
                              "image=modal.Image.debian_slim().pip_install('fastapi')") from None
        docs = bool(web.get("docs"))
        app = FastAPI(docs_url="/docs" if docs else None, redoc_url=None,
                      openapi_url="/openapi.json" if docs else None)
        app.add_api_route("/", fn, methods=[web.get("method") or "GET"])
        return app
    made = fn()
    if inspect.iscoroutine(made):
        made = asyncio.run(made)
    if made is None or not callable(made):
        raise TypeError(f"@modal.{kind}_app: the function must return the {kind.upper()} app "
                        f"(got {type(made).__name__})")
    return _wsgi_to_asgi(made) if kind == "wsgi" else made


def start_web_server(web: dict[str, Any], fn: Callable) -> None:
    """`@modal.web_server(port)`: the function starts a server (and returns, or keeps
    serving in its own thread); the container is ready once 127.0.0.1:`port` accepts a
    connection, and fails to start after `startup_timeout` (as Modal's)."""
    import socket
    import threading
    import time

    port, limit = int(web["port"]), float(web.get("startup_timeout_s") or 5.0)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # reported below if the port never opens
            failed.append(e)
    threading.Thread(target=run, name="web-server", daemon=True).start()
    deadline = time.monotonic() + limit
    while True:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if failed:
            raise failed[0]
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"@modal.web_server: nothing listened on port {port} within startup_timeout="
                f"{limit:g}s: start the server on 0.0.0.0:{port} (or 127.0.0.1) in the "
                "function, e.g. with subprocess.Popen, or raise startup_timeout")
        time.sleep(0.05)


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def _scope(wire: dict[str, Any]) -> dict[str, Any]:
    scope = dict(wire)
    scope["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in wire["headers"]]
    scope["query_string"] = wire.get("query_string", "").encode("latin-1")
    scope["raw_path"] = (wire.get("raw_path") or wire["path"]).encode(
        "latin-1" if wire.get("raw_path") else "utf-8")
    for key in ("client", "server"):
        if wire.get(key):
            scope[key] = tuple(wire[key])
    scope["asgi"] = {"version": "3.0", "spec_version": "2.3"}
    return scope


class WebServer:
    """The requests in flight in this container: rid -> (inbox, task)."""

    def __init__(self, app: Any, send: Callable[[dict, bytes], None],
                 loop: asyncio.AbstractEventLoop):
        self.app, self.send, self.loop = app, send, loop
        self.inboxes: dict[int, asyncio.Queue] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.cancelled: set[int] = set()   # cancelled before their task began
        self.lifespan: asyncio.Queue | None = None
        self._shutdown_done = False

    # called on the runner's read thread
    def frame(self, header: dict[str, Any], body: bytes) -> None:
        kind, rid = header.get("t"), int(header.get("rid", -1))
        if kind == "asgi_start":
            inbox: asyncio.Queue = asyncio.Queue()
            self.inboxes[rid] = inbox
            asyncio.run_coroutine_threadsafe(self._serve(rid, header["scope"], inbox), self.loop)
        elif kind == "asgi_in":
            msg = dict(header.get("msg") or {})
            field = _BYTES.get(msg.get("type", ""))
            if msg.pop("text_in_body", False):
                msg["text"] = body.decode("utf-8", "replace")
            elif field:
                msg[field] = body
            inbox = self.inboxes.get(rid)
            if inbox is not None:
                self.loop.call_soon_threadsafe(inbox.put_nowait, msg)
        elif kind == "asgi_cancel":
            self.loop.call_soon_threadsafe(self._cancel, rid)

    def _cancel(self, rid: int) -> None:
        task = self.tasks.get(rid)
        if task is not None:
            task.cancel()
        elif rid in self.inboxes:  # its task has not begun: it ends as it begins
            self.cancelled.add(rid)

    async def _serve(self, rid: int, wire_scope: dict[str, Any], inbox: asyncio.Queue) -> None:
        self.tasks[rid] = asyncio.current_task()  # type: ignore[assignment]
        if rid in self.cancelled:
            self.cancelled.discard(rid)
            self.inboxes.pop(rid, None)
            self.tasks.pop(rid, None)
            self.send({"t": "asgi_end", "rid": rid, "error": "cancelled before it began"}, b"")
            return

        async def receive() -> dict:
            return await inbox.get()

        async def send(msg: dict) -> None:
            msg = dict(msg)
            kind = msg.get("type", "")
            field = _BYTES.get(kind)
            data = bytes(msg.pop(field, None) or b"") if field else b""
            if kind == "websocket.send" and msg.get("text") is not None:
                data = msg.pop("text").encode()  # in the frame's body, not its JSON header
                msg["text_in_body"] = True
            if "headers" in msg:  # bytes pairs -> JSON
                msg["headers"] = [[_text(k), _text(v)] for k, v in msg["headers"]]
            if kind == "http.response.body" and len(data) > FRAME_BODY:
                more = bool(msg.get("more_body"))
                for i in range(0, len(data), FRAME_BODY):
                    part = data[i:i + FRAME_BODY]
                    last = i + FRAME_BODY >= len(data)
                    self.send({"t": "asgi_out", "rid": rid,
                               "msg": {**msg, "more_body": more or not last}}, part)
                return
            self.send({"t": "asgi_out", "rid": rid, "msg": msg}, data)

        error = None
        try:
            await self.app(_scope(wire_scope), receive, send)
        except asyncio.CancelledError:
            error = "cancelled: the client went away"
        except BaseException as e:
            # the client gets the exception's type and first line; the traceback goes to
            # the app's logs (`sbx app logs`), never to an anonymous caller
            first = (str(e).splitlines() or [""])[0][:500]
            error = f"{type(e).__name__}: {first} (traceback in `sbx app logs`)"
            traceback.print_exc()
        finally:
            self.inboxes.pop(rid, None)
            self.tasks.pop(rid, None)
        self.send({"t": "asgi_end", "rid": rid, "error": error}, b"")

    async def startup(self) -> None:
        """ASGI lifespan startup (FastAPI's on_startup and lifespan), if the app speaks it."""
        inbox: asyncio.Queue = asyncio.Queue()
        done: asyncio.Future = self.loop.create_future()
        await inbox.put({"type": "lifespan.startup"})

        async def send(msg: dict) -> None:
            if msg["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self._shutdown_done = True
            if msg["type"] == "lifespan.startup.complete" and not done.done():
                done.set_result(None)
            elif msg["type"] == "lifespan.startup.failed" and not done.done():
                done.set_exception(RuntimeError(f"lifespan startup failed: {msg.get('message')}"))

        async def run() -> None:
            try:
                await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
            except BaseException:  # an app without lifespan support: fine
                pass
            if not done.done():
                done.set_result(None)
        self.lifespan = inbox
        asyncio.ensure_future(run())
        await done

    async def shutdown(self) -> None:
        """ASGI lifespan shutdown; waits up to 5 s for the app's shutdown hooks."""
        if self.lifespan is not None:
            await self.lifespan.put({"type": "lifespan.shutdown"})
            for _ in range(50):
                if self._shutdown_done:
                    return
                await asyncio.sleep(0.1)


def _wsgi_to_asgi(wsgi: Callable) -> Callable:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan")  # WSGI apps have none
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _run_wsgi, wsgi, _environ(scope, b"".join(chunks)),
                                   lambda m: asyncio.run_coroutine_threadsafe(send(m), loop)
                                   .result())
    return app


def _environ(scope: dict, body: bytes) -> dict[str, Any]:
    import io

    root = scope.get("root_path", "")
    path = scope["path"]
    if root and path.startswith(root):
        path = path[len(root):]
    server = scope.get("server") or ("localhost", 80)
    def wsgi_str(text: str) -> str:  # PEP 3333: the path's UTF-8 bytes as latin-1 text
        return text.encode("utf-8").decode("latin-1")

    env = {"REQUEST_METHOD": scope["method"], "SCRIPT_NAME": wsgi_str(root),
           "PATH_INFO": wsgi_str(path),
           "QUERY_STRING": scope["query_string"].decode("latin-1"),
           "SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1]),
           "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
           "wsgi.version": (1, 0), "wsgi.url_scheme": scope.get("scheme", "http"),
           "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
           "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
           "CONTENT_LENGTH": str(len(body))}
    if scope.get("client"):
        env["REMOTE_ADDR"] = str(scope["client"][0])
    for k, v in scope["headers"]:
        name = k.decode("latin-1").upper().replace("-", "_")
        value = v.decode("latin-1")
        if name == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
        elif name != "CONTENT_LENGTH":
            key = "HTTP_" + name
            env[key] = env[key] + "," + value if key in env else value
    return env


def _run_wsgi(wsgi: Callable, environ: dict, send: Callable[[dict], Any]) -> None:
    state: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
        state["start"] = {"type": "http.response.start", "status": int(status.split()[0]),
                          "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                      for k, v in headers]}
        return write

    def flush_start() -> None:
        if "start" in state:
            send(state.pop("start"))
            state["sent"] = True

    def write(data: bytes) -> None:
        flush_start()
        if data:
            send({"type": "http.response.body", "body": bytes(data), "more_body": True})

    result = wsgi(environ, start_response)
    try:
        for chunk in result:
            write(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    flush_start()
    send({"type": "http.response.body", "body": b"", "more_body": False})
