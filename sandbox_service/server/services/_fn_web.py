"""Web endpoints of functions (server layer): their labels and URLs, and the relay of one
HTTP request or WebSocket to a warm container as ASGI messages on the runner's connection
(the container's side is `sandbox_service/_runner_web.py`). Mixed into `FunctionService`.

- A label is the endpoint's name in its URL: `label=` or `<app>-<function>`; `-dev` is
  appended for `app.run()` / `sbx run` (a random suffix if that is taken); a principal
  other than the admin gets `<principal>--` in front. One label, one active function: a
  deploy that would take another app's label is refused (409).
- URLs: `/web/<label>/` on the service's own port (path-routed: any HTTP client works with
  no DNS set-up; the app sees `root_path`), or `<scheme>://<label>.<domain>/` when the
  operator set `SBX_WEB_DOMAIN` (host-routed).
- A request waits for a container with room (`@modal.concurrent` sets how many requests one
  container serves); the autoscaler counts waiting requests as demand, so the first
  request after scale-to-zero cold-starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from typing import Any, Callable

from ...wire import ASGI_BYTES as _BYTES
from ...wire import errors as E
from ._fn_pool import ContainerStartError

log = logging.getLogger("sbx.web")
_SLUG = re.compile(r"[^a-z0-9-]+")
CANCEL_GRACE_S = 2.0  # after a client leaves, the app's cleanup runs this long before cancel


def slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:63].strip("-") or "app"


class WebMixin:
    """Labels, URLs and the request relay; state: `web_labels` (label -> function id)."""

    functions: dict[str, dict[str, Any]]
    web_labels: dict[str, str]
    web_claims: dict[str, str]       # label -> app id, while that app's deploy runs
    web_domain: str | None
    web_scheme: str
    web_stats: dict[str, dict[str, Any]]
    _pool: Any

    def web_label_for(self, fn_name: str, app_name: str, owner: str, web: dict[str, Any],
                      mode: str) -> str:
        base = web.get("label") or slug(f"{app_name}-{fn_name}")
        if owner != "admin":
            base = slug(f"{owner}--{base}")
        if mode != "deployed":
            base = f"{base[:59]}-dev"
            if base in self.web_labels or base in self.web_claims:
                base = f"{base[:52]}-{secrets.token_hex(3)}"
        return base

    def check_web_label(self, label: str, app_id: str) -> None:
        claim = self.web_claims.get(label)
        if claim is not None and claim != app_id:  # another deploy is taking it right now
            raise E.ConflictError(f"the web label {label!r} is being taken by another deploy: "
                                  "pass label= to name this endpoint")
        fid = self.web_labels.get(label)
        other = self.functions.get(fid or "")
        if other is not None and other["app_id"] != app_id and other.get("state") == "active":
            raise E.ConflictError(f"the web label {label!r} is taken by app "
                                  f"{other.get('app_name')!r}: pass label= to name this "
                                  "endpoint, or stop that app")

    def web_url(self, fn: dict[str, Any]) -> str | None:
        label = fn.get("web_label")
        if not label:
            return None
        if self.web_domain:
            return f"{self.web_scheme}://{label}.{self.web_domain}/"
        return f"/web/{label}/"

    def web_function(self, label: str) -> dict[str, Any] | None:
        fn = self.functions.get(self.web_labels.get(label, ""))
        return fn if fn is not None and fn.get("state") == "active" else None

    def _meter(self, fn: dict[str, Any], status: int, seconds: float) -> None:
        st = self.web_stats.setdefault(fn["function_id"], {"requests": 0, "errors": 0,
                                                           "latency_ms": []})
        st["requests"] += 1
        st["errors"] += 500 <= status < 600
        st["latency_ms"] = (st["latency_ms"] + [round(seconds * 1000, 2)])[-1000:]

    def web_meter(self, function_id: str) -> dict[str, Any]:
        st = self.web_stats.get(function_id)
        if not st:
            return {}
        lat = sorted(st["latency_ms"])
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else None
        return {"web_requests": st["requests"], "web_errors": st["errors"],
                "web_latency_ms": {"p50": pick(0.5), "p99": pick(0.99)} if pick else {}}

    async def serve_web(self, fn: dict[str, Any], scope: dict[str, Any], receive: Callable,
                        send: Callable, root_path: str, max_body: int,
                        proxy: Callable | None = None) -> None:
        """Relay one request (or WebSocket) to a container of `fn`; answer errors here.
        A `@web_server` endpoint's request goes to its port instead: `proxy(sandbox_id,
        port, send)` (the port proxy, given by the ingress) answers it."""
        t0, status = time.monotonic(), [0]

        async def send_meter(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
            elif msg["type"] == "websocket.accept":
                status[0] = 101
            elif msg["type"] == "websocket.close" and not status[0]:
                status[0] = 403  # refused before it was accepted
            await send(msg)
        try:
            if fn["spec"]["web"]["kind"] == "server":
                assert proxy is not None
                await self._relay_port(fn, scope, send_meter, proxy)
            else:
                await self._relay_web(fn, scope, receive, send_meter, root_path, max_body)
        finally:  # no answer at all: the client went away first (nginx's 499)
            self._meter(fn, status[0] or 499, time.monotonic() - t0)

    async def _acquire(self, fn: dict[str, Any], scope: dict[str, Any],
                       send: Callable) -> tuple[Any, Any]:
        """(pool, container connection) with room for this request, or (pool, None) once
        the error is answered."""
        spec = fn["spec"]
        pool = self._pool(fn, None)
        startup = float(spec.get("startup_timeout_s") or spec.get("timeout_s") or 300) + 30
        try:
            return pool, await pool.web_acquire(startup)
        except ContainerStartError as e:
            await error_response(scope, send, 503, f"the endpoint's container could not "
                                 f"start:\n{e}\n")
        except asyncio.TimeoutError:
            await error_response(scope, send, 503, "no container of this endpoint became "
                                 f"ready within {startup:.0f}s: try again\n")
        return pool, None

    async def _relay_port(self, fn: dict[str, Any], scope: dict[str, Any], send: Callable,
                          proxy: Callable) -> None:
        """A `@web_server` request: to the port its container's server listens on."""
        pool, conn = await self._acquire(fn, scope, send)
        if conn is None:
            return
        spec = fn["spec"]
        started = [False]

        async def tracked(msg: dict) -> None:
            started[0] = started[0] or msg["type"] in ("http.response.start",
                                                       "websocket.accept", "websocket.close")
            await send(msg)
        try:
            await asyncio.wait_for(proxy(conn.sandbox_id, int(spec["web"]["port"]), tracked),
                                   float(spec.get("timeout_s") or 300))
        except asyncio.TimeoutError:
            if not started[0]:
                await error_response(scope, send, 504, "the endpoint did not answer within "
                                     f"its timeout ({spec.get('timeout_s')}s)\n")
        except E.SandboxError as e:
            if not started[0]:
                await error_response(scope, send, e.http_status if e.http_status >= 500
                                     else 502, "the endpoint's server could not be reached: "
                                     f"{e.message}\n")
        finally:
            pool.web_release(conn)

    async def _relay_web(self, fn: dict[str, Any], scope: dict[str, Any], receive: Callable,
                         send: Callable, root_path: str, max_body: int) -> None:
        spec = fn["spec"]
        pool, conn = await self._acquire(fn, scope, send)
        if conn is None:
            return
        conn.next_rid += 1
        rid = conn.next_rid
        inbox: asyncio.Queue = asyncio.Queue()
        conn.asgi[rid] = inbox
        state = {"started": False, "ended": False, "too_large": False}
        up: asyncio.Task | None = None
        try:
            await conn.send({"t": "asgi_start", "rid": rid,
                             "scope": wire_scope(scope, root_path)})
            up = asyncio.create_task(self._upstream(conn, rid, receive, max_body, state))
            await asyncio.wait_for(self._downstream(inbox, scope, send, state, up, root_path),
                                   float(spec.get("timeout_s") or 300))
        except asyncio.TimeoutError:
            if not state["started"]:
                await error_response(scope, send, 504, "the endpoint did not answer within its "
                                     f"timeout ({spec.get('timeout_s')}s)\n")
            elif scope["type"] == "websocket":
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": 1011})
        except Exception as e:  # the container's connection went
            log.info("web %s: %s", fn["name"], e)
            if not state["started"]:
                await error_response(scope, send, 502, "the endpoint's container went away "
                                     "while it served this request\n")
        finally:
            try:
                if up is not None:
                    up.cancel()
                conn.asgi.pop(rid, None)
                if not state["ended"]:  # the client left or we gave up: the app stops too,
                    # after a grace for its cleanup of the disconnect it was told about
                    asyncio.get_running_loop().call_later(
                        CANCEL_GRACE_S, lambda: asyncio.ensure_future(_cancel(conn, rid)))
            finally:
                pool.web_release(conn)

    async def _upstream(self, conn: Any, rid: int, receive: Callable, max_body: int,
                        state: dict[str, Any]) -> None:
        total = 0
        while True:
            msg = dict(await receive())
            field = _BYTES.get(msg["type"])
            data = msg.pop(field, None) if field else None
            if msg["type"] == "websocket.receive" and msg.get("text") is not None:
                data = msg.pop("text").encode()  # in the frame's body, not its JSON header
                msg["text_in_body"] = True
            if msg["type"] == "http.request":
                total += len(data or b"")
                if total > max_body:
                    state["too_large"] = True
                    return
            await conn.send({"t": "asgi_in", "rid": rid, "msg": msg}, bytes(data or b""))
            if msg["type"] in ("http.disconnect", "websocket.disconnect"):
                return

    async def _downstream(self, inbox: asyncio.Queue, scope: dict[str, Any], send: Callable,
                          state: dict[str, Any], up: asyncio.Task, root_path: str) -> None:
        while True:
            get = asyncio.ensure_future(inbox.get())
            done, _ = await asyncio.wait({get, up}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                if not up.cancelled() and up.exception() is not None:
                    raise ConnectionError(f"relaying the request failed: {up.exception()}")
                if state["too_large"] and not state["started"]:
                    await error_response(scope, send, 413, "the request body is over the "
                                         "limit (SBX_WEB_MAX_BODY_MIB)\n")
                return  # the client went away
            item = get.result()
            if item is None:
                raise ConnectionError("the container's connection closed")
            header, body = item
            if header["t"] == "asgi_end":
                state["ended"] = True
                if not state["started"]:
                    err = header.get("error") or "the app returned without a response"
                    await error_response(scope, send, 500, f"the endpoint raised:\n{err}\n")
                return
            msg = dict(header["msg"])
            if "headers" in msg:
                msg["headers"] = [(str(k).encode("latin-1"), _location(k, v, root_path))
                                  for k, v in msg["headers"]]
            field = _BYTES.get(msg["type"])
            if msg.pop("text_in_body", False):
                msg["text"] = body.decode("utf-8", "replace")
            elif field:
                msg[field] = body
            if msg["type"] in ("http.response.start", "websocket.accept"):
                state["started"] = True
            await send(msg)
            if (msg["type"] == "http.response.body" and not msg.get("more_body")) or \
                    msg["type"] == "websocket.close":
                up.cancel()
                state["ended"] = True  # the app may run on; the response is complete
                return


def _location(name: str, value: str, root_path: str) -> bytes:
    """A redirect to an absolute path ("/login") of an app written for a domain root
    stays under the endpoint's /web/<label> prefix (as nginx's proxy_redirect)."""
    if (root_path and str(name).lower() == "location" and value.startswith("/")
            and not value.startswith("//") and not value.startswith(root_path + "/")
            and value != root_path):
        value = root_path + value
    return str(value).encode("latin-1")


async def _cancel(conn: Any, rid: int) -> None:
    with contextlib.suppress(Exception):
        await conn.send({"t": "asgi_cancel", "rid": rid})


def wire_scope(scope: dict[str, Any], root_path: str) -> dict[str, Any]:
    out = {"type": scope["type"], "http_version": scope.get("http_version", "1.1"),
           "scheme": scope.get("scheme", "http"), "path": scope["path"],
           "raw_path": (scope.get("raw_path") or b"").decode("latin-1") or None,
           "query_string": (scope.get("query_string") or b"").decode("latin-1"),
           "root_path": root_path,
           "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                       for k, v in scope.get("headers", [])],
           "client": list(scope["client"]) if scope.get("client") else None,
           "server": list(scope["server"]) if scope.get("server") else None}
    if scope["type"] == "http":
        out["method"] = scope["method"]
    else:
        out["subprotocols"] = list(scope.get("subprotocols") or [])
    return out


async def error_response(scope: dict[str, Any], send: Callable, status: int,
                         text: str) -> None:
    """A plain-text error (a WebSocket is closed instead)."""
    if scope["type"] == "websocket":
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": 1011 if status >= 500 else 1008})
        return
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
