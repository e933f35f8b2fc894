"""Modal's `modal.output` module (public layer): `enable_output`, from this package."""

from ._app import enable_output
from ._missing import missing

__all__ = ["enable_output"]


def __getattr__(name: str):
    raise missing(__name__, name)
