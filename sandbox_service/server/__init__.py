"""The server layer: the FastAPI app factory (`create_app`) and its settings.

- `routes/`: thin HTTP/WebSocket adapters (parse the wire model, call a service);
- `services/`: sandbox lifecycle, images, secrets, contexts, the store;
- `_app.py` (the factory and middleware), `_access.py` (auth, once), `_settings.py`
  (every setting, read once from the environment), `_stall.py` (stalled clients),
  `_errors.py` (HTTP error shapes).

Imported only by `sbx serve` and tests; `import sandbox_service` never imports this.
"""

from ._app import begin_shutdown, create_app
from ._settings import Settings
from .services import SandboxManager, SQLiteStore, Store

__all__ = ["SQLiteStore", "SandboxManager", "Settings", "Store", "begin_shutdown", "create_app"]
