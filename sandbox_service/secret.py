"""Modal's `modal.secret` module (public layer): the same names, from this package."""

from ._missing import missing
from ._secret import Secret

__all__ = ["Secret"]


def __getattr__(name: str):
    raise missing(__name__, name)
