"""REST routes for images: build (streamed log), list, get, remove, gc, blob uploads, and
sandbox filesystem snapshots (server layer).

Handlers translate HTTP to ImageService calls and nothing more; auth is the app's
middleware. A build streams newline-delimited JSON events (see `wire/_images.py`); the build
itself runs in its own task, so a client that disconnects does not cancel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ...wire import (
    SHA256_RE,
    BlobsMissingRequest,
    BlobsMissingResponse,
    GcResult,
    ImageBuildRequest,
    ImageInfo,
    ImageList,
    image_info,
)
from ...wire import errors as E
from ..services import ImageService

log = logging.getLogger("sbx.server.images")
MAX_QUEUED_LINES = 10_000
images_router = APIRouter()


def _svc(request: Request) -> ImageService:
    return request.app.state.image_service


def _base_infos(svc: ImageService) -> list[ImageInfo]:
    return [ImageInfo(image_id=b.image_id, digest=b.digest, created_at=0.0, layers=1,
                      size_bytes=b.size_bytes, python=b.python, source="debian_slim (base)")
            for b in svc.base.list()]


@images_router.get("/v1/images", response_model=ImageList)
async def list_images(request: Request) -> ImageList:
    svc = _svc(request)
    recs = await svc.list(request.state.principal.name)
    disk = await asyncio.to_thread(svc.disk_bytes)
    return ImageList(images=_base_infos(svc) + [image_info(r) for r in recs], disk_bytes=disk)


@images_router.get("/v1/images/{image_id}", response_model=ImageInfo)
async def get_image(image_id: str, request: Request) -> ImageInfo:
    svc = _svc(request)
    base = next((b for b in _base_infos(svc) if b.image_id == image_id), None)
    return base or image_info(await svc.get(image_id))


@images_router.delete("/v1/images/{image_id}")
async def remove_image(image_id: str, request: Request) -> dict:
    svc = _svc(request)
    if any(b.image_id == image_id for b in _base_infos(svc)):
        raise E.ConflictError("the base image is managed by the service and cannot be removed")
    await svc.remove(image_id, request.state.principal.name)
    return {"image_id": image_id, "removed": True}


@images_router.post("/v1/images/gc", response_model=GcResult)
async def gc_images(request: Request) -> GcResult:
    return GcResult(**await _svc(request).gc())


@images_router.post("/v1/images")
async def build_image(body: ImageBuildRequest, request: Request) -> StreamingResponse:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_QUEUED_LINES)
    dropped = [0]

    def emit(text: str) -> None:  # a slow or gone client never makes the server hold more
        try:
            queue.put_nowait(text)
        except asyncio.QueueFull:
            dropped[0] += 1

    task = _svc(request).start_build(body, emit, request.state.principal.name)

    def line(obj: dict) -> bytes:
        return (json.dumps(obj) + "\n").encode()

    async def events():
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield line({"type": "log", "line": getter.result()})
                continue
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter
            while not queue.empty():
                yield line({"type": "log", "line": queue.get_nowait()})
            if dropped[0]:
                yield line({"type": "log", "line": f"({dropped[0]} log lines dropped: the "
                                                   "client read too slowly)"})
            yield line(_final(task))
            return

    return StreamingResponse(events(), media_type="application/x-ndjson")


def _final(task: asyncio.Task) -> dict:
    exc = task.exception()
    if exc is None:
        return {"type": "done", "image": image_info(task.result()).model_dump()}
    if not isinstance(exc, E.SandboxError):  # details (host paths) stay in the server log
        log.error("image build failed", exc_info=exc)
        exc = E.ImageBuildError(f"image build failed on the server ({type(exc).__name__}); "
                                "its log has the details. Finished steps are cached: retry")
    return {"type": "error", **exc.to_wire()}


@images_router.post("/v1/blobs/missing", response_model=BlobsMissingResponse)
async def missing_blobs(body: BlobsMissingRequest, request: Request) -> BlobsMissingResponse:
    return BlobsMissingResponse(missing=_svc(request).missing_blobs(body.digests))


@images_router.put("/v1/blobs/{digest}")
async def put_blob(digest: str, request: Request) -> dict:
    import re

    if not re.match(SHA256_RE, digest):
        raise E.InvalidRequestError("a blob is named by the sha256 of its content (64 hex digits)")
    size = await _svc(request).put_blob(digest, request.stream(),
                                        request.app.state.settings.max_upload_bytes)
    return {"sha256": digest, "size_bytes": size}


@images_router.post("/v1/sandboxes/{sandbox_id}/snapshot", response_model=ImageInfo)
async def snapshot(sandbox_id: str, request: Request) -> ImageInfo:
    rec = await request.app.state.manager.snapshot(sandbox_id)
    return image_info(rec)
