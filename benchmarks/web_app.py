"""The app of benchmarks/bench_web.py: a raw ASGI endpoint (no package needed), the same
app called in-process inside a container (the baseline), and a FastAPI app for cold starts."""

import asyncio
import time

import sandbox_service as modal

app = modal.App("bench-web")
fastapi_image = modal.Image.debian_slim().pip_install("fastapi==0.115.6")


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@app.function(block_network=True, max_containers=1, min_containers=1)
@modal.concurrent(max_inputs=64)
@modal.asgi_app()
def web():
    return hello


@app.function(block_network=True)
def inside(n: int) -> list[float]:
    """The same request, made inside a container straight to the app (milliseconds)."""
    async def one() -> float:
        msgs = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            return msgs.pop() if msgs else {"type": "http.disconnect"}

        async def send(_):
            pass
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [],
                 "query_string": b""}
        t0 = time.perf_counter()
        await hello(scope, receive, send)
        return (time.perf_counter() - t0) * 1000

    async def all_():
        return [await one() for _ in range(n)]
    return asyncio.run(all_())


@app.function(image=fastapi_image, block_network=True, scaledown_window=2)
@modal.asgi_app()
def fast():
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/")
    def root():
        return {"ok": True}
    return api
