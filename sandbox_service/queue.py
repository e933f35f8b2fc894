"""Modal's `modal.queue` module (public layer): the same names, from this package."""

from ._missing import missing
from ._queue import Queue

__all__ = ["Queue"]


def __getattr__(name: str):
    raise missing(__name__, name)
