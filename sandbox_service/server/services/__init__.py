"""Services (server layer): the state and decisions behind the routes.

| module | service |
|---|---|
| `_manager` | `SandboxManager`: sandbox lifecycle, quotas, exec/files/ports through the runtime |
| `_pool` | the warm pool of booted default sandboxes |
| `_contexts` | `ContextService`: the code interpreter's contexts |
| `_images` | `ImageService`: builds, layers, blobs, image GC |
| `_secrets` | `SecretService`: named secrets, sealed at rest |
| `_functions` | `FunctionService`: calls and function containers (`_fn_apps` deployments and apps, `_fn_pool` autoscaler and dispatch, `_fn_runner` the runner connection, `_fn_calls` outputs, `_fn_logs` app logs, `_fn_store` tables, `_sdk_mount` the SDK in containers) |
| `_schedules` | `ScheduleService`: Cron and Period schedules of deployed functions |
| `_kv` | `KvService`: Dicts and Queues (`_kv_store` their tables), and the records of Volumes |
| `_volumes` | `VolumeService`: Volumes' files (`_volume_fs` the API's reads and writes) |
| `_store` | `Store` / `SQLiteStore`: the one durable store (`state.db`) |
| `_runtime_errors` | runtime exceptions -> API errors, mapped once at this boundary |

Services use runtimes, images and security through their front doors and never import
FastAPI.
"""

from ._contexts import ContextService
from ._fn_web import error_response as web_error_response
from ._functions import FUNCTION_TAG, FunctionService
from ._gpus import GpuService
from ._images import ImageService
from ._kv import KvService
from ._manager import SandboxManager
from ._records import AppRecord, SandboxRecord
from ._schedules import ScheduleService
from ._secrets import SecretService, secret_meta
from ._store import SQLiteStore, Store
from ._volumes import VolumeService

__all__ = ["FUNCTION_TAG", "AppRecord", "ContextService", "FunctionService", "GpuService", "ImageService", "KvService", "SQLiteStore", "SandboxManager",
           "SandboxRecord", "ScheduleService", "SecretService", "Store", "VolumeService", "secret_meta", "web_error_response"]
