"""sandbox-service: gVisor sandboxes for LLM agents, with Modal's vocabulary.

    import sandbox_service as modal
    sb = modal.Sandbox.create()
    p = sb.exec("python3", "-c", "print(1)")
    print(p.stdout.read())

The package namespace is the public API (pinned by a test); every module is private. This
package never imports the server or FastAPI: it reaches the service over HTTP/WebSocket.
"""

from . import exception
from ._missing import missing as _missing
from ._version import __version__
from .wire import (  # the errors: stdlib only
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
)

# name -> the module that defines it, imported on first use (PEP 562): a function container
# imports the user's module, which touches App and the decorators, and should not pay for
# httpx, pydantic and the sandbox API it never uses
_LAZY = {
    "App": "_app", "enable_output": "_app", "is_local": "_app",
    "current_function_call_id": "_app", "current_input_id": "_app",
    "Cls": "_cls", "Obj": "_cls",
    "Function": "_functions", "FunctionCall": "_functions", "Retries": "_functions",
    "batched": "_partial", "concurrent": "_partial", "enter": "_partial", "exit": "_partial",
    "method": "_partial", "parameter": "_partial",
    "Filesystem": "_filesystem", "SandboxFile": "_filesystem",
    "Image": "_image",
    "Context": "_interpreter", "Execution": "_interpreter", "ExecutionError": "_interpreter",
    "Logs": "_interpreter", "Result": "_interpreter",
    "ContainerProcess": "_process",
    "Sandbox": "_sandbox",
    "Dict": "_dict", "Queue": "_queue", "Volume": "_volume",
    "Cron": "_schedule", "Period": "_schedule",
    "asgi_app": "_web", "fastapi_endpoint": "_web", "web_endpoint": "_web",
    "web_server": "_web", "wsgi_app": "_web",
    "Secret": "_secret",
    "StreamReader": "_streams", "StreamWriter": "_streams",
    "PortForward": "_tunnel", "Tunnel": "_tunnel",
}

__all__ = [
    "App", "AuthenticationError", "ConflictError", "ContainerProcess", "ExecTimeoutError",
    "Filesystem", "Image", "ImageBuildError", "InvalidRequestError", "NotFoundError",
    "PayloadTooLargeError", "PermissionDeniedError", "PortForward", "PortUnreachableError",
    "QuotaExceededError", "RuntimeUnavailableError", "Sandbox", "SandboxError", "SandboxFileError",
    "SandboxFile", "SandboxFileNotFoundError", "SandboxOOMError", "SandboxTerminatedError",
    "SandboxTimeoutError", "SandboxUnresponsiveError", "Secret", "ServerUnreachableError", "StreamReader", "StreamWriter",
    "Tunnel", "__version__", "enable_output",
]
__all__ += ["Context", "Execution", "ExecutionError", "Logs", "Result"]  # code interpreter
# functions and classes (Modal's names)
__all__ += ["Cls", "Error", "Function", "FunctionCall", "Obj", "Retries", "batched",
            "concurrent", "current_function_call_id", "current_input_id", "enter",
            "exception", "exit", "is_local", "method", "parameter"]
__all__ += ["Dict", "Queue", "Volume"]  # storage (Modal's names)
__all__ += ["Cron", "Period"]  # schedules
__all__ += ["GpuBusyError", "GpuUnavailableError"]  # GPUs
__all__ += ["asgi_app", "fastapi_endpoint", "web_endpoint", "web_server", "wsgi_app"]  # web
Error = SandboxError


# Modal's submodules, reachable as attributes (`modal.container_process.ContainerProcess`)
# as in Modal, imported on first use
_SUBMODULES = ("aio", "app", "cls", "container_process", "dict", "functions", "image",
               "output", "partial_function", "queue", "retries", "sandbox", "schedule",
               "secret", "volume")


def __getattr__(name: str):
    import importlib

    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = value
        return value
    mod = _LAZY.get(name)
    if mod is None:
        raise _missing(__name__, name)
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
