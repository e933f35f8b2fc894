"""Runtimes layer: turning a request into an isolated container and talking to it.

Must not import the server (`sandbox_service.server`) or FastAPI. The server reaches a
runtime only through the `Runtime` interface.

The package's front door: other packages import these names from `runtimes`, never from
its private modules.
"""

from ._agent_client import AgentError, AgentUnavailable, AgentUnresponsive
from ._base import (
                    ContainerSpec,
                    ContainerStatus,
                    ExecSpec,
                    ExecStream,
                    ExitFrame,
                    FileStat,
                    Runtime,
)
from ._errors import RuntimeFault
from ._gpu import (
                    GpuAllocationError,
                    GpuAllocator,
                    GpuDevice,
                    NoGpus,
                    Nvml,
                    host_inventory,
)
from ._hostcmd import (
                    CommandResult,
                    HostCommandError,
                    run_command,
                    run_sync,
                    spawn,
                    start_command,
                    stop_command,
)
from ._untar import ExportError
from ._volume_disk import VolumeDisks
from .agent.sbxagent import exits as exit_codes

__all__ = ["AgentError", "AgentUnavailable", "AgentUnresponsive", "CommandResult",
           "ContainerSpec", "ContainerStatus", "ExecSpec", "ExecStream", "ExitFrame",
           "ExportError", "FileStat", "HostCommandError", "Runtime", "RuntimeFault", "run_command", "run_sync",
           "VolumeDisks", "exit_codes", "GpuAllocationError", "GpuAllocator", "GpuDevice",
           "NoGpus", "Nvml", "host_inventory", "spawn", "start_command", "stop_command"]
