"""Modal's `modal.functions` module (public layer): the same names, from this package."""

from ._cls import Cls, Obj
from ._functions import Function, FunctionCall, Retries, _Function, _FunctionCall
from ._missing import missing

__all__ = ["Cls", "Function", "FunctionCall", "Obj", "Retries", "_Function", "_FunctionCall"]


def __getattr__(name: str):
    raise missing(__name__, name)
