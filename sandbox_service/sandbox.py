"""Modal's `modal.sandbox` module (public layer): the same names, from this package."""

from ._missing import missing
from ._sandbox import Sandbox

__all__ = ["Sandbox"]


def __getattr__(name: str):
    raise missing(__name__, name)
