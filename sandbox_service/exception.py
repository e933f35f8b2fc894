"""Modal's `modal.exception` names (public layer): `from sandbox_service.exception import
NotFoundError` works as `from modal.exception import NotFoundError` does.

Each name is this package's own class (one error root, `SandboxError`, also reachable as
`Error`), so `except modal.exception.NotFoundError` catches what the SDK raises.
"""

from __future__ import annotations

from ._missing import missing
from .wire import errors as _E

AuthenticationError = _E.AuthenticationError
ConflictError = _E.ConflictError
DeserializationError = _E.DeserializationError
ExecTimeoutError = _E.ExecTimeoutError
ExecutionError = _E.ExecutionError
FunctionCancelledError = _E.FunctionCancelledError
FunctionTimeoutError = _E.FunctionTimeoutError
GpuBusyError = _E.GpuBusyError
GpuUnavailableError = _E.GpuUnavailableError
ImageBuildError = _E.ImageBuildError
InvalidRequestError = _E.InvalidRequestError
NotFoundError = _E.NotFoundError
OutputExpiredError = _E.OutputExpiredError
PayloadTooLargeError = _E.PayloadTooLargeError
PermissionDeniedError = _E.PermissionDeniedError
QuotaExceededError = _E.QuotaExceededError
RemoteError = _E.RemoteError
SandboxError = _E.SandboxError
SandboxTerminatedError = _E.SandboxTerminatedError
SandboxTimeoutError = _E.SandboxTimeoutError
SerializationError = _E.SerializationError
ServerUnreachableError = _E.ServerUnreachableError
StorageFullError = _E.StorageFullError

Error = SandboxError
InvalidError = InvalidRequestError
AuthError = AuthenticationError
ConnectionError = ServerUnreachableError  # noqa: A001 (Modal's name)
TimeoutError = SandboxTimeoutError  # noqa: A001 (Modal's name: the base of its timeouts)
RequestSizeError = PayloadTooLargeError


class VersionError(SandboxError):
    """The client and the server speak different versions."""


class ClientClosed(SandboxError):
    """The client was closed."""


class InteractiveTimeoutError(SandboxTimeoutError):
    """An interactive session timed out."""


class MountUploadTimeoutError(SandboxTimeoutError):
    """Uploading local files timed out."""


class VolumeUploadTimeoutError(SandboxTimeoutError):
    """Uploading to a volume timed out."""


class InputCancellation(BaseException):
    """Raised inside a function's container when its input is cancelled. A BaseException,
    like Modal's, so a bare `except Exception` in user code does not swallow it."""


class ModuleNotMountable(Exception):
    pass


class DeprecationError(UserWarning):
    pass


class PendingDeprecationError(UserWarning):
    pass


__all__ = [
    "AuthError", "AuthenticationError", "ClientClosed", "ConflictError", "ConnectionError",
    "DeprecationError", "DeserializationError", "Error", "ExecTimeoutError", "ExecutionError",
    "FunctionCancelledError", "FunctionTimeoutError", "GpuBusyError", "GpuUnavailableError",
    "ImageBuildError", "InputCancellation",
    "InteractiveTimeoutError", "InvalidError", "InvalidRequestError", "ModuleNotMountable",
    "MountUploadTimeoutError", "NotFoundError", "OutputExpiredError", "PayloadTooLargeError",
    "PendingDeprecationError", "PermissionDeniedError", "QuotaExceededError", "RemoteError",
    "RequestSizeError", "SandboxError", "SandboxTerminatedError", "SandboxTimeoutError",
    "SerializationError", "ServerUnreachableError", "StorageFullError", "TimeoutError", "VersionError",
    "VolumeUploadTimeoutError",
]


def __getattr__(name: str):
    raise missing(__name__, name)
