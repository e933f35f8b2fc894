"""The `sbx` command (CLI layer): a client of the SDK, plus `sbx serve`.

Must not import the server at module level: server imports happen inside `serve` only,
so client commands start fast and never need FastAPI. `python -m sandbox_service.cli` is
the same as `sbx`.
"""

from ._main import main

__all__ = ["main"]
