"""Modal's `modal.cls` module (public layer): the same names, from this package."""

from ._cls import Cls, Obj, _Cls, _Obj
from ._missing import missing
from ._partial import parameter

__all__ = ["Cls", "Obj", "_Cls", "_Obj", "parameter"]


def __getattr__(name: str):
    raise missing(__name__, name)
