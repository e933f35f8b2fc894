"""The server layer: FastAPI app factory, routers, store, sandbox lifecycle.

Imported only by `sbx serve` and tests; `import sandbox_service` never imports this.
"""

from ._app import create_app
from ._manager import SandboxManager
from ._settings import Settings
from ._store import SQLiteStore, Store

__all__ = ["SQLiteStore", "SandboxManager", "Settings", "Store", "create_app"]
