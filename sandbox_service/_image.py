"""Image (public layer): which root filesystem a sandbox boots from.

This issue ships the base image; the layered builder (apt_install, pip_install, ...) comes
with the images work and will extend this recipe without changing how it is passed.
"""

from __future__ import annotations


from . import _errors as E
from ._ids import is_id

BASE_PYTHON = "3.11"  # Debian bookworm's python3


class Image:
    def __init__(self, ref: str):
        self._ref_value = ref

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> "Image":
        """Debian bookworm (minbase) with python3, pip and CA certificates."""
        if python_version is not None and str(python_version) != BASE_PYTHON:
            raise E.InvalidRequestError(
                f"python_version={python_version!r} is not available yet: the base image has "
                f"Python {BASE_PYTHON}; leave python_version unset")
        return cls("debian_slim")

    @classmethod
    def from_id(cls, image_id: str) -> "Image":
        if not is_id("image", image_id):
            raise E.InvalidRequestError(f"{image_id!r} is not an image id (im-...)")
        return cls(image_id)

    def _ref(self) -> str:
        return self._ref_value

    @property
    def object_id(self) -> str:
        return self._ref_value

    def __repr__(self) -> str:
        return f"Image({self._ref_value!r})"


