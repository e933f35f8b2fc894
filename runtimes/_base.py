"""The one interface the server uses to reach a runtime (runtimes layer).

A runtime turns a ContainerSpec into an isolated, running container whose PID 1 is the
in-sandbox agent, and gives back streams and file operations through it. This module
must not import the server, FastAPI or any backend; backends import it.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import Any, AsyncIterator


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """What to boot. Limits are already validated by the caller."""

    container_id: str
    rootfs: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    memory_mib: int = 1024
    cpu: float | None = None
    nproc: int = 512
    nofile: int = 4096
    # Writable disk in MiB, separate from memory (a write past it gets ENOSPC); None keeps
    # writes in memory (they count against memory_mib).
    disk_mib: int | None = None
    # The rootfs is this container's own directory (an image build's overlay mount):
    # writes land in it instead of a private in-memory overlay.
    writable_rootfs: bool = False
    # Network egress through a per-container namespace and the host's policy rules;
    # False means no interface but loopback.
    egress: bool = False
    # With egress: None for open egress (minus the always-blocked ranges), else the only
    # IPv4 CIDRs the container may reach (DNS to the host's resolvers stays allowed).
    egress_allowlist: tuple[str, ...] | None = None
    # With egress: names (`*.example.com`: every name below it) whose resolved IPv4
    # addresses the container may also reach; its DNS then goes only to the runtime's
    # filtering resolver (DNS pinning). None: no domain rule.
    egress_domains: tuple[str, ...] | None = None
    # Extra read-only bind mounts: (host path, path inside the container).
    mounts: tuple[tuple[str, str], ...] = ()
    # Volumes: (host directory, path inside, read_only). Read-write binds of a directory on
    # a nodev,nosuid ext4 (_volume_disk.py) that only this container's principal uses.
    volumes: tuple[tuple[str, str, bool], ...] = ()
    # Whole GPUs (runtimes.GpuDevice) this container may use, allocated by the caller
    # (GpuAllocator); empty for none.
    gpus: tuple = ()


@dataclasses.dataclass
class ExecSpec:
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    timeout_s: float | None = None
    pty: bool = False
    rows: int = 24
    cols: int = 80
    uid: int | None = None
    gid: int | None = None
    keep_stdin: bool = False  # a main command: its stdin stays open (write_main_stdin)


@dataclasses.dataclass(frozen=True)
class FileStat:
    """One file, directory or link inside a container (what `list_dir` and `stat` give)."""
    name: str
    path: str
    type: str  # "file" | "directory" | "symlink" | "other"
    size: int
    mode: int
    mtime: float

    @classmethod
    def from_agent(cls, entry: dict) -> "FileStat":
        return cls(name=str(entry["name"]), path=str(entry["path"]), type=str(entry["type"]),
                   size=int(entry["size"]), mode=int(entry["mode"]), mtime=float(entry["mtime"]))


@dataclasses.dataclass
class ContainerStatus:
    running: bool
    oom_killed: bool = False


@dataclasses.dataclass
class ExitFrame:
    exit_code: int
    timed_out: bool = False
    signal: int | None = None


class ExecStream(abc.ABC):
    """A running command. Output comes from `events()`; input goes the other way."""

    pid: int | None = None

    @abc.abstractmethod
    def events(self) -> AsyncIterator[tuple[str, bytes] | ExitFrame]:
        """Yields ("stdout"|"stderr", bytes) in arrival order, then one ExitFrame."""

    @abc.abstractmethod
    async def write_stdin(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def close_stdin(self) -> None: ...

    @abc.abstractmethod
    async def send_signal(self, signum: int) -> None: ...

    @abc.abstractmethod
    async def resize(self, rows: int, cols: int) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Drop the stream; a command still running is killed with its process group."""


class Runtime(abc.ABC):
    """A container backend. Every method takes fixed-length container ids."""

    name: str = "abstract"
    # Why ContainerSpec.disk_mib cannot be honoured here (None: it can); set by start().
    disk_quota_unavailable: str | None = "this runtime has no disk quotas"
    # why GPU containers cannot run (ContainerSpec.gpus), None when they can
    gpu_unavailable: str | None = "this runtime has no GPU support"

    async def start(self) -> None:
        """Detect host features and prepare host state; the server calls it once, first.
        Raises an error whose message says what to install or fix."""
        return None

    @abc.abstractmethod
    async def create(self, spec: ContainerSpec) -> None:
        """Boot the container and return once its agent answers."""

    @abc.abstractmethod
    async def exec(self, container_id: str, spec: ExecSpec) -> ExecStream: ...

    async def set_env(self, container_id: str, env: dict[str, str]) -> None:
        """Add to the environment every later command in the container inherits (used to
        hand a pre-booted container to its caller)."""
        raise NotImplementedError

    @abc.abstractmethod
    async def start_main(self, container_id: str, spec: ExecSpec) -> None:
        """Start the container's main command; it survives a restart of the server."""

    async def write_main_stdin(self, container_id: str, data: bytes, eof: bool) -> None:
        """Write to the main command's stdin (started with keep_stdin), closing it if eof."""
        raise NotImplementedError(f"{self.name} cannot write a main command's stdin")

    @abc.abstractmethod
    async def attach_main(self, container_id: str, offsets: dict[str, int]) -> ExecStream:
        """Stream the main command's output from byte offsets {"stdout", "stderr"}, then
        its exit frame (at once if it already exited)."""

    @abc.abstractmethod
    async def read_file(self, container_id: str, path: str) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def write_file(self, container_id: str, path: str, chunks: AsyncIterator[bytes],
                         *, mode: int | None = None, parents: bool = True) -> int: ...

    @abc.abstractmethod
    async def list_dir(self, container_id: str, path: str) -> list[FileStat]: ...

    @abc.abstractmethod
    async def stat(self, container_id: str, path: str) -> FileStat: ...

    @abc.abstractmethod
    async def mkdir(self, container_id: str, path: str, *, parents: bool = True) -> None: ...

    @abc.abstractmethod
    async def remove(self, container_id: str, path: str, *, recursive: bool = False) -> None: ...

    async def open_port(self, container_id: str, port: int) -> tuple[Any, Any]:
        """A byte stream (asyncio reader, writer) to TCP `port` on the container's own
        loopback, reached through the in-container agent, never through a network: it
        works with no network at all. Raises AgentError("port_refused") when nothing
        listens there."""
        raise NotImplementedError(f"{self.name} cannot reach ports inside a container")

    @abc.abstractmethod
    async def status(self, container_id: str) -> ContainerStatus: ...

    @abc.abstractmethod
    async def destroy(self, container_id: str) -> ContainerStatus:
        """Kill and remove everything the container owns. Idempotent."""

    @abc.abstractmethod
    async def reattach(self, container_id: str) -> bool:
        """After a server restart: True if the container is alive and its agent answers."""

    @abc.abstractmethod
    async def collect(self, known: set[str]) -> list[str]:
        """Reap containers, cgroups and state this runtime owns that `known` lacks."""

    async def stats(self, container_id: str) -> dict:
        return {}

    def memory_bytes(self, container_id: str) -> int | None:
        """The container's memory use now, cheaply (no subprocess), or None if unknown."""
        return None

    async def probe(self, container_id: str) -> None:
        """Check that the container's agent answers, reviving it if the runtime can.
        Raises AgentUnresponsive when it does not (then `unresponsive` says why), or
        AgentUnavailable when the container is gone. Never waits unboundedly."""
        return None

    def unresponsive(self, container_id: str) -> str | None:
        """Why the container's agent was found dead by `probe` (None: it was not)."""
        return None

    async def context_op(self, container_id: str, req: dict) -> dict:
        """A request about the container's interpreter contexts (op ctx_create, ctx_list,
        ctx_get, ctx_interrupt or ctx_delete; see agent/sbxagent/contexts.py)."""
        raise NotImplementedError(f"{self.name} has no interpreter contexts")

    async def context_run(self, container_id: str, req: dict):
        """Start a cell (op ctx_run); returns a stream whose `events()` yields ("stdout" |
        "stderr", bytes) and ("event", dict) up to the "end" event, and `close()`."""
        raise NotImplementedError(f"{self.name} has no interpreter contexts")

    async def export_changes(self, container_id: str, base_rootfs: str, dest_dir: str):
        """Write what the container changed relative to `base_rootfs` into `dest_dir` (a
        layer diff) and return a `runtimes._export.ExportResult` (deleted paths, counts)."""
        raise NotImplementedError(f"{self.name} cannot snapshot a container's file system")

    @contextlib.asynccontextmanager
    async def egress_namespace(self, name: str) -> AsyncIterator[str | None]:
        """A network namespace policed like a sandbox's open egress, for host tools that
        fetch on a caller's behalf (registry pulls run skopeo in it); yields its path, or
        None when this runtime has none (the caller then uses the host's network). `name`
        is a container id the caller keeps in its `known` set while it is open."""
        yield None

    async def close(self) -> None:
        return None
