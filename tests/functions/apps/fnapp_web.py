"""The app of tests/functions/test_web.py: web endpoints as a Modal program writes them,
with plain ASGI and WSGI apps (no package to install)."""

from __future__ import annotations

import asyncio
import json
import os

import sandbox_service as modal

app = modal.App("fn-web")
PEAK = {"now": 0, "max": 0}


async def raw_asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                PEAK["lifespan"] = True
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text") if msg.get("text") is not None else msg["bytes"].decode()
            if text == "close":
                await send({"type": "websocket.close", "code": 1000})
                return
            await send({"type": "websocket.send", "text": "echo:" + text})
    body, more = b"", True
    while more:
        m = await receive()
        body += m.get("body", b"")
        more = m.get("more_body", False)
    path = scope["path"]
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    if path.endswith("/stream"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": f"chunk{i}\n".encode(),
                        "more_body": True})
            await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b""})
        return
    if path.endswith("/boom"):
        raise RuntimeError("kaboom in the endpoint")
    if path.endswith("/sleep"):
        PEAK["now"] += 1
        PEAK["max"] = max(PEAK["max"], PEAK["now"])
        await asyncio.sleep(0.6)
        PEAK["now"] -= 1
    if path.endswith("/hang"):
        try:
            await asyncio.sleep(120)
        finally:
            modal.Dict.from_name(headers["x-flag-dict"]).put("cancelled", True)
    data = json.dumps({"path": path, "root_path": scope["root_path"], "method": scope["method"],
                       "body_len": len(body), "query": scope["query_string"].decode(),
                       "auth": headers.get("authorization"), "peak": PEAK["max"],
                       "lifespan": PEAK.get("lifespan", False), "pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


@app.function(max_containers=1, scaledown_window=2, block_network=True)
@modal.concurrent(max_inputs=8)
@modal.asgi_app()
def web():
    return raw_asgi


def wsgi_hello(environ, start_response):
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Kind", "wsgi")])
    body = environ["wsgi.input"].read().decode()
    return [f"wsgi {environ['REQUEST_METHOD']} {environ['SCRIPT_NAME']}|{environ['PATH_INFO']}"
            f"?{environ['QUERY_STRING']} {body}".encode()]


@app.function(block_network=True)
@modal.wsgi_app(label="wsgi-test")
def flaskish():
    return wsgi_hello


@app.function(block_network=True)
@modal.asgi_app(requires_proxy_auth=True)
def private():
    return raw_asgi


@app.function(block_network=True)
@modal.asgi_app()
def broken():
    raise RuntimeError("cannot load the model")
