"""The wire contract (wire layer): what travels between the SDK and the server.

Both ends import these: pydantic request/response models (`extra="forbid"`, units in
names), the typed errors with their stable codes and HTTP statuses (`errors`, and each
class by name), and the object ids. Imports pydantic and the stdlib only (the pydantic models load on first use, PEP 562,
so a function container that only registers functions never loads pydantic); never the SDK's
transport, the server or FastAPI.
"""

from . import _errors as errors
from ._errors import (  # stdlib only: loaded at once
    ERROR_CODES,
    AuthenticationError,
    ConflictError,
    ExecTimeoutError,
    GpuBusyError,
    GpuUnavailableError,
    ImageBuildError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PortUnreachableError,
    QuotaExceededError,
    RuntimeUnavailableError,
    SandboxError,
    SandboxFileError,
    SandboxFileNotFoundError,
    SandboxOOMError,
    SandboxTerminatedError,
    SandboxTimeoutError,
    SandboxUnresponsiveError,
    ServerUnreachableError,
    StorageFullError,
    error_from_wire,
    validation_message,
)
from ._frames import (  # stdlib only: loaded at once
    ASGI_BYTES,
    MAX_HEADER,
    RUNNER_PORT,
    encode_frame,
)
from ._gpu import (  # stdlib only: loaded at once
    GpuRequest,
    parse_gpu,
    parse_gpus,
)
from ._ids import (  # stdlib only: loaded at once
    is_id,
    new_id,
)

# name -> the submodule that defines it (pydantic models: loaded on first use)
_LAZY = {
    'ABS_PATH': '_api',
    'AppDeploy': '_functions',
    'AppDeployed': '_functions',
    'AppInfo': '_api',
    'AppLookup': '_api',
    'AppSummary': '_functions',
    'AppSummaryList': '_functions',
    'BlobsMissingRequest': '_images',
    'BlobsMissingResponse': '_images',
    'CONTEXT_ID': '_contexts',
    'GpuDeviceInfo': '_api',
    'GpuList': '_api',
    'CallCreate': '_functions',
    'CallCreated': '_functions',
    'CallInfo': '_functions',
    'CallInputs': '_functions',
    'CallOutput': '_functions',
    'CallOutputs': '_functions',
    'CodeRunRequest': '_contexts',
    'ContainerSummary': '_functions',
    'ContainerSummaryList': '_functions',
    'ContextCreate': '_contexts',
    'ContextInfo': '_contexts',
    'ContextList': '_contexts',
    'DEFAULT_CELL_TIMEOUT_S': '_contexts',
    'DEFAULT_CONTEXT': '_contexts',
    'ErrorBody': '_api',
    'ExecRequest': '_api',
    'ExecResult': '_api',
    'ExitStatus': '_api',
    'FileEntry': '_api',
    'FileList': '_api',
    'FunctionInfo': '_functions',
    'FunctionSpec': '_functions',
    'GcResult': '_images',
    'ImageBuildRequest': '_images',
    'ImageInfo': '_images',
    'ImageList': '_images',
    'MAX_INPUTS_PER_REQUEST': '_functions',
    'MAX_PAYLOAD_BYTES': '_functions',
    'MAX_TIMEOUT_S': '_api',
    'MkdirRequest': '_api',
    'PORT_PATTERN': '_api',
    'RetryPolicy': '_functions',
    'SHA256_RE': '_images',
    'STREAM_STDERR': '_api',
    'STREAM_STDIN': '_api',
    'STREAM_STDOUT': '_api',
    'SandboxCreate': '_api',
    'SandboxInfo': '_api',
    'SandboxList': '_api',
    'SandboxTags': '_api',
    'SecretCreate': '_api',
    'SecretInfo': '_api',
    'SecretList': '_api',
    'ServerInfo': '_api',
    'check_abs_path': '_api',
    'check_payload': '_functions',
    'ScheduleSpec': '_functions',
    'WebSpec': '_functions',
    'MAX_QUEUE_PARTITIONS': '_kv',
    'MAX_OBJECTS_PER_OWNER': '_kv',
    'MAX_DICT_ENTRIES': '_kv',
    'KvLookup': '_kv',
    'KvInfo': '_kv',
    'KvList': '_kv',
    'DictKey': '_kv',
    'DictEntry': '_kv',
    'DictPut': '_kv',
    'DictPutResult': '_kv',
    'DictValue': '_kv',
    'DictItem': '_kv',
    'DictEntries': '_kv',
    'Count': '_kv',
    'QueuePut': '_kv',
    'QueueGet': '_kv',
    'QueueValues': '_kv',
    'QueueClear': '_kv',
    'QueueNext': '_kv',
    'QueueItems': '_kv',
    'MAX_QUEUE_WAIT_S': '_kv',
    'MAX_DICT_VALUE_BYTES': '_kv',
    'MAX_QUEUE_ITEM_BYTES': '_kv',
    'MAX_PARTITION_ITEMS': '_kv',
    'image_info': '_images',
    'VolumeMount': '_volumes',
    'TunnelInfo': '_api',
    'TunnelList': '_api',
    'VolumeFile': '_volumes',
    'VolumeListing': '_volumes',
    'VolumeCopy': '_volumes',
    'VolumeUsage': '_volumes',
    'volume_path_parts': '_volumes',
    'MAX_VOLUMES_PER_CONTAINER': '_volumes',
    'parse_port': '_api',
}

__all__ = [
    "ASGI_BYTES", "MAX_HEADER", "MAX_INPUTS_PER_REQUEST", "MAX_PAYLOAD_BYTES", "MAX_TIMEOUT_S", "RUNNER_PORT", "AppDeploy", "AppDeployed",
    "AppSummary", "AppSummaryList", "CallCreate", "CallCreated", "CallInfo", "CallInputs",
    "CallOutput", "CallOutputs", "ContainerSummary", "ContainerSummaryList", "FunctionInfo",
    "FunctionSpec", "RetryPolicy", "check_payload", "encode_frame",
    "ABS_PATH", "AppInfo", "AppLookup", "AuthenticationError", "BlobsMissingRequest",
    "BlobsMissingResponse", "CONTEXT_ID", "CodeRunRequest", "ConflictError", "ContextCreate",
    "ContextInfo", "ContextList", "DEFAULT_CELL_TIMEOUT_S", "DEFAULT_CONTEXT", "ERROR_CODES",
    "ErrorBody", "ExecRequest", "ExecResult", "ExecTimeoutError", "ExitStatus", "FileEntry",
    "FileList", "GcResult", "ImageBuildError", "ImageBuildRequest", "ImageInfo", "ImageList",
    "InvalidRequestError", "MkdirRequest", "NotFoundError", "PORT_PATTERN",
    "PayloadTooLargeError", "PermissionDeniedError", "PortUnreachableError",
    "QuotaExceededError", "RuntimeUnavailableError", "SHA256_RE", "STREAM_STDERR",
    "STREAM_STDIN", "STREAM_STDOUT", "SandboxCreate", "SandboxError", "SandboxFileError",
    "SandboxFileNotFoundError", "SandboxInfo", "SandboxList", "SandboxOOMError", "SandboxTags",
    "SandboxTerminatedError", "SandboxTimeoutError", "SandboxUnresponsiveError",
    "SecretCreate", "SecretInfo", "SecretList", "ServerInfo", "ServerUnreachableError",
    "StorageFullError",
    "check_abs_path", "error_from_wire", "errors", "image_info", "is_id", "new_id",
    "parse_port", "validation_message",
    "ScheduleSpec", "WebSpec",
    # Dicts and Queues
    "MAX_DICT_ENTRIES", "MAX_OBJECTS_PER_OWNER", "MAX_QUEUE_PARTITIONS", "KvLookup", "KvInfo", "KvList", "DictKey", "DictEntry", "DictPut", "DictPutResult", "DictValue", "DictItem", "DictEntries", "Count", "QueuePut", "QueueGet", "QueueValues", "QueueClear", "QueueNext", "QueueItems", "MAX_QUEUE_WAIT_S", "MAX_DICT_VALUE_BYTES", "MAX_QUEUE_ITEM_BYTES", "MAX_PARTITION_ITEMS",
    # Volumes
    "MAX_VOLUMES_PER_CONTAINER", "VolumeCopy", "VolumeFile", "VolumeListing", "VolumeMount",
    "VolumeUsage", "volume_path_parts",
    "TunnelInfo", "TunnelList",
    # GPUs
    "GpuBusyError", "GpuRequest", "GpuUnavailableError", "parse_gpu", "parse_gpus",
    "GpuDeviceInfo", "GpuList",
]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
