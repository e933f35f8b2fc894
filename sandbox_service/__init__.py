"""sandbox-service: gVisor sandboxes for LLM agents, with Modal's vocabulary.

    import sandbox_service as modal
    sb = modal.Sandbox.create()
    p = sb.exec("python3", "-c", "print(1)")
    print(p.stdout.read())

The package namespace is the public API (pinned by a test); every module is private. This
package never imports the server or FastAPI: it reaches the service over HTTP/WebSocket.
"""

from . import exception
from ._app import App, enable_output, is_local
from ._cls import Cls, Obj
from ._functions import Function, FunctionCall, Retries
from ._missing import missing as _missing
from ._partial import batched, concurrent, enter, exit, method, parameter
from ._filesystem import Filesystem, SandboxFile
from ._image import Image
from ._interpreter import Context, Execution, ExecutionError, Logs, Result
from ._process import ContainerProcess
from ._sandbox import Sandbox
from ._secret import Secret
from ._streams import StreamReader, StreamWriter
from ._tunnel import PortForward, Tunnel
from ._version import __version__
from .wire import (
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
)

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
            "concurrent", "enter", "exception", "exit", "is_local", "method", "parameter"]
Error = SandboxError


def __getattr__(name: str):
    raise _missing(__name__, name)
