"""The app of tests/functions/test_web_fastapi.py: `@modal.fastapi_endpoint` and a FastAPI
app under `@modal.asgi_app`, on an image with FastAPI installed (as Modal requires)."""

from __future__ import annotations

import sandbox_service as modal

image = modal.Image.debian_slim().pip_install("fastapi==0.115.6")
app = modal.App("fn-fastapi", image=image)


@app.function(block_network=True)
@modal.fastapi_endpoint()
def square(x: int):
    return {"square": x * x}


@app.function(block_network=True)
@modal.fastapi_endpoint(method="POST", docs=True)
def echo(item: dict):
    return {"got": item}


@app.function(block_network=True)
@modal.asgi_app()
def api():
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    web = FastAPI()

    @web.get("/items/{item_id}")
    def item(item_id: int):
        return {"item": item_id}

    @web.get("/go")
    def go():
        return RedirectResponse("/items/7")

    return web
