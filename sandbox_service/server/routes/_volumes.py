"""REST routes of Volumes' files (server layer). Thin: each calls `VolumeService`
(services/_volumes.py). Lookup, ephemeral volumes, list and delete are the routes Volumes
share with Dicts and Queues (routes/_kv.py, at /v1/volumes/...).

Paths inside a volume travel in the `path` query parameter; file bodies stream both ways
as raw bytes (no JSON, no whole file in memory).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from ...wire import VolumeCopy, VolumeListing, VolumeUsage
from ..services import VolumeService

volumes_router = APIRouter()


def _svc(request: Request) -> VolumeService:
    return request.app.state.volumes


@volumes_router.get("/v1/volumes/{volume_id}/files", response_model=VolumeListing)
async def volume_listdir(volume_id: str, request: Request, path: str = "/",
                         recursive: bool = False) -> VolumeListing:
    return await _svc(request).listdir(request.state.principal, volume_id, path, recursive)


@volumes_router.get("/v1/volumes/{volume_id}/file", response_class=StreamingResponse,
                    responses={200: {"content": {"application/octet-stream": {}}}})
async def volume_read(volume_id: str, request: Request, path: str = Query(...)):
    chunks, size = await _svc(request).read(request.state.principal, volume_id, path)
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})


@volumes_router.put("/v1/volumes/{volume_id}/file", status_code=204)
async def volume_write(volume_id: str, request: Request, path: str = Query(...),
                       force: bool = False, mode: int | None = Query(None, ge=0, le=0o7777)
                       ) -> Response:
    """The body is the file's bytes; parent directories are made. Without `force` an
    existing file is a 409."""
    request.state.audit_detail = {"path": path[:256]}
    await _svc(request).write(request.state.principal, volume_id, path, request.stream(),
                              force=force, mode=mode)
    return Response(status_code=204)


@volumes_router.delete("/v1/volumes/{volume_id}/file", status_code=204)
async def volume_remove(volume_id: str, request: Request, path: str = Query(...),
                        recursive: bool = False) -> Response:
    request.state.audit_detail = {"path": path[:256], "recursive": recursive}
    await _svc(request).remove(request.state.principal, volume_id, path, recursive)
    return Response(status_code=204)


@volumes_router.post("/v1/volumes/{volume_id}/copy", status_code=204)
async def volume_copy(volume_id: str, body: VolumeCopy, request: Request) -> Response:
    await _svc(request).copy(request.state.principal, volume_id, body)
    return Response(status_code=204)


@volumes_router.get("/v1/volumes/{volume_id}/usage", response_model=VolumeUsage)
async def volume_usage(volume_id: str, request: Request) -> VolumeUsage:
    return await _svc(request).usage(request.state.principal, volume_id)



