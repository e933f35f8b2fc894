"""Modal's `modal.volume` module (public layer): the same names, from this package."""

from ._missing import missing
from ._volume import BatchUpload, FileEntry, FileEntryType, Volume

__all__ = ["BatchUpload", "FileEntry", "FileEntryType", "Volume"]


def __getattr__(name: str):
    raise missing(__name__, name)
