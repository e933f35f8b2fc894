"""Modal's `modal.schedule` module (public layer): the same names, from this package."""

from ._missing import missing
from ._schedule import Cron, Period

__all__ = ["Cron", "Period"]


def __getattr__(name: str):
    raise missing(__name__, name)
