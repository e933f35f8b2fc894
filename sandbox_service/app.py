"""Modal's `modal.app` module (public layer): the same names, from this package."""

from ._app import App, _AsyncApp
from ._missing import missing

_App = _AsyncApp

__all__ = ["App", "_App"]


def __getattr__(name: str):
    raise missing(__name__, name)
