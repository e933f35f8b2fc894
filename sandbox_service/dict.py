"""Modal's `modal.dict` module (public layer): the same names, from this package."""

from ._dict import Dict
from ._missing import missing

__all__ = ["Dict"]


def __getattr__(name: str):
    raise missing(__name__, name)
