"""Typed errors shared by the SDK and the server (public layer, imported by both sides).

One root, `SandboxError`; every leaf also subclasses the builtin a Python user would catch
(`TimeoutError`, `FileNotFoundError`, ...), carries a stable `code`, and maps to exactly one
HTTP status. The client maps a wire `code` back to a class through `ERROR_CODES`, never by
importing a class path sent over the wire. Must not import anything else of the project.
"""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """Root of every error this package raises."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details or {}

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class InvalidRequestError(SandboxError, ValueError):
    """The request is malformed or out of bounds."""

    code, http_status = "invalid_request", 400


class AuthenticationError(SandboxError, PermissionError):
    """No valid token was given."""

    code, http_status = "unauthorized", 401


class PermissionDeniedError(SandboxError, PermissionError):
    """The token is valid but may not do this."""

    code, http_status = "forbidden", 403


class NotFoundError(SandboxError, LookupError):
    """No such object."""

    code, http_status = "not_found", 404


class SandboxFileNotFoundError(NotFoundError, FileNotFoundError):
    """No such file or directory inside the sandbox."""

    code, http_status = "file_not_found", 404


class SandboxFileError(SandboxError, OSError):
    """A file operation inside the sandbox failed (is a directory, not empty, ...)."""

    code, http_status = "file_error", 400


class ConflictError(SandboxError):
    """The object is not in a state that allows this."""

    code, http_status = "conflict", 409


class SandboxTerminatedError(ConflictError):
    """The sandbox has already finished; create a new one."""

    code, http_status = "sandbox_terminated", 409


class SandboxUnresponsiveError(SandboxTerminatedError):
    """The sandbox's agent stopped answering (code inside stopped or broke its PID 1), so
    the sandbox was ended; create a new one."""

    code, http_status = "sandbox_unresponsive", 409


class SandboxTimeoutError(SandboxError, TimeoutError):
    """An operation ran out of time."""

    code, http_status = "timeout", 408


class ExecTimeoutError(SandboxTimeoutError):
    """The command ran past its `timeout` and was killed (exit code 124)."""

    code, http_status = "exec_timeout", 408


class SandboxOOMError(SandboxError, MemoryError):
    """The sandbox ran out of memory and was killed; raise `memory=` and retry."""

    code, http_status = "sandbox_oom", 409


class QuotaExceededError(SandboxError):
    """A limit on concurrent sandboxes or request rate was reached."""

    code, http_status = "quota_exceeded", 429


class StorageFullError(SandboxError, OSError):
    """A volume write went past the quota of its principal's volumes (inside a container
    the same write gets ENOSPC)."""

    code, http_status = "storage_full", 507


class PortUnreachableError(SandboxError, ConnectionError):
    """The sandbox declares the port, but nothing answered on it inside the sandbox."""

    code, http_status = "port_unreachable", 502


class PayloadTooLargeError(InvalidRequestError):
    """The request body is larger than the server accepts."""

    code, http_status = "payload_too_large", 413


class RuntimeUnavailableError(SandboxError):
    """The sandbox runtime cannot start containers right now."""

    code, http_status = "runtime_unavailable", 503


class GpuUnavailableError(RuntimeUnavailableError):
    """This server cannot give the GPU asked for: it has none of that model, no GPU at all,
    or a runsc or driver that cannot run GPU sandboxes. The message says which."""

    code, http_status = "gpu_unavailable", 503


class GpuBusyError(GpuUnavailableError):
    """Every GPU of the model asked for is held by other sandboxes or containers now;
    retry when one finishes."""

    code, http_status = "gpu_busy", 503


class ImageBuildError(SandboxError):
    """An image could not be built."""

    code, http_status = "image_build_failed", 400


class ServerUnreachableError(SandboxError, ConnectionError):
    """The client could not reach the server; check SBX_URL and that `sbx serve` runs."""

    code, http_status = "server_unreachable", 503


class FunctionTimeoutError(SandboxTimeoutError):
    """A function input ran past its `timeout`; its container was stopped."""

    code, http_status = "function_timeout", 408


class OutputExpiredError(SandboxTimeoutError):
    """A function call's result is gone: it was kept for the documented retention, or
    it was never made."""

    code, http_status = "output_expired", 410


class FunctionCancelledError(ConflictError):
    """The function call was cancelled before it produced this result."""

    code, http_status = "cancelled", 409


class ExecutionError(SandboxError):
    """A function's container could not run it (its module failed to import, `@enter`
    raised, or the container died)."""

    code, http_status = "execution_error", 502


class RemoteError(SandboxError):
    """A function raised an exception that cannot be re-raised here as its own type."""

    code, http_status = "remote_error", 502


class SerializationError(InvalidRequestError):
    """An argument or a result could not be pickled (cloudpickle)."""

    code, http_status = "serialization_error", 400


class DeserializationError(SandboxError):
    """A result (or an exception) could not be unpickled here."""

    code, http_status = "deserialization_error", 500


def _leaves(cls: type[SandboxError]) -> list[type[SandboxError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_leaves(sub))
    return out


ERROR_CODES: dict[str, type[SandboxError]] = {c.code: c for c in _leaves(SandboxError)}


def error_from_wire(status: int, body: Any) -> SandboxError:
    """Build the typed exception for an error response body `{"error": {...}}`."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return SandboxError(f"server answered HTTP {status} without an error body")
    cls = ERROR_CODES.get(str(err.get("code")), SandboxError)
    exc = cls(str(err.get("message", "")), details=err.get("details") or None)
    if cls is SandboxError:
        exc.code = str(err.get("code", "internal"))
    return exc


def validation_message(exc: Any) -> str:
    """A pydantic ValidationError as one line ("field: why; ..."), for an
    InvalidRequestError: the server's 400s and the SDK's own checks of the wire models."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
