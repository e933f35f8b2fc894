"""Runtimes layer: turning a request into an isolated container and talking to it.

Must not import the server (`sandbox_service.server`) or FastAPI. The server reaches a
runtime only through the `Runtime` interface.

The package's front door: other packages import these names from `runtimes`, never from
its private modules.
"""

from ._agent_client import AgentError, AgentUnavailable, AgentUnresponsive
from ._base import ContainerSpec, ContainerStatus, ExecSpec, ExecStream, ExitFrame, Runtime
from ._untar import ExportError

__all__ = ["AgentError", "AgentUnavailable", "AgentUnresponsive", "ContainerSpec",
           "ContainerStatus", "ExecSpec", "ExecStream", "ExitFrame", "ExportError", "Runtime"]
