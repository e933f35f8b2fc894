"""The wire contract (wire layer): what travels between the SDK and the server.

Both ends import these: pydantic request/response models (`extra="forbid"`, units in
names), the typed errors with their stable codes and HTTP statuses (`errors`, and each
class by name), and the object ids. Imports pydantic and the stdlib only; never the SDK's
transport, the server or FastAPI.
"""

from . import _errors as errors
from ._api import (
                   ABS_PATH,
                   PORT_PATTERN,
                   STREAM_STDERR,
                   STREAM_STDIN,
                   STREAM_STDOUT,
                   AppInfo,
                   AppLookup,
                   ErrorBody,
                   ExecRequest,
                   ExecResult,
                   ExitStatus,
                   FileEntry,
                   FileList,
                   MkdirRequest,
                   SandboxCreate,
                   SandboxInfo,
                   SandboxList,
                   SandboxTags,
                   SecretCreate,
                   SecretInfo,
                   SecretList,
                   ServerInfo,
                   check_abs_path,
                   parse_port,
)
from ._contexts import (
                   CONTEXT_ID,
                   DEFAULT_CELL_TIMEOUT_S,
                   DEFAULT_CONTEXT,
                   CodeRunRequest,
                   ContextCreate,
                   ContextInfo,
                   ContextList,
)
from ._errors import (
                   ERROR_CODES,
                   AuthenticationError,
                   ConflictError,
                   ExecTimeoutError,
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
                   error_from_wire,
                   validation_message,
)
from ._ids import is_id, new_id
from ._images import (
                   SHA256_RE,
                   BlobsMissingRequest,
                   BlobsMissingResponse,
                   GcResult,
                   ImageBuildRequest,
                   ImageInfo,
                   ImageList,
                   image_info,
)

__all__ = [
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
    "check_abs_path", "error_from_wire", "errors", "image_info", "is_id", "new_id",
    "parse_port", "validation_message",
]
