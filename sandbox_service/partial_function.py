"""Modal's `modal.partial_function` module (public layer): the same names, from this package."""

from ._missing import missing
from ._partial import (
    PartialFunction,
    batched,
    concurrent,
    enter,
    exit,
    method,
    parameter,
)

__all__ = ["PartialFunction", "batched", "concurrent", "enter", "exit", "method", "parameter"]


def __getattr__(name: str):
    raise missing(__name__, name)
