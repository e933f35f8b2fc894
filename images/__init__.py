"""Images layer: the base image (debootstrap) and the content-addressed image store.

Must not import the server (`sandbox_service.server`) or FastAPI. A built image is a
read-only rootfs directory shared by every sandbox started from it.
"""

from ._model import BASE_IMAGE_NAME, BuiltImage, ImageBuildError
from ._store import ImageStore

__all__ = ["BASE_IMAGE_NAME", "BuiltImage", "ImageBuildError", "ImageStore"]
