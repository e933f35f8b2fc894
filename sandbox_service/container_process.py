"""Modal's `modal.container_process` module (public layer): the same names, from this package."""

from ._missing import missing
from ._process import ContainerProcess

__all__ = ["ContainerProcess"]


def __getattr__(name: str):
    raise missing(__name__, name)
