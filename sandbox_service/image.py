"""Modal's `modal.image` module (public layer): the same names, from this package."""

from ._image import Image
from ._missing import missing

__all__ = ["Image"]


def __getattr__(name: str):
    raise missing(__name__, name)
