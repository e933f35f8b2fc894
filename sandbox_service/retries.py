"""Modal's `modal.retries` module (public layer): the same names, from this package."""

from ._functions import Retries
from ._missing import missing

__all__ = ["Retries"]


def __getattr__(name: str):
    raise missing(__name__, name)
