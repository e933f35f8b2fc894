"""Resource policy: defaults and bounds for sandbox limits (security layer).

Pure functions over numbers; must not import the server or runtimes. The bounds keep one
sandbox from asking for more than the host has.
"""

from __future__ import annotations

import dataclasses
import os


def host_memory_mib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 4096


@dataclasses.dataclass(frozen=True)
class ResourcePolicy:
    default_memory_mib: int = 1024
    max_memory_mib: int = dataclasses.field(default_factory=host_memory_mib)
    max_cpu: float = float(os.cpu_count() or 1)
    # writable disk per sandbox (a sparse file: host blocks only as written); 0 = writes
    # stay in memory unless the request asks for a disk
    default_disk_mib: int = 4096
    max_disk_mib: int = 64 * 1024
    nproc: int = 512
    nofile: int = 4096
    max_sandboxes: int = 200
    # per principal (API keys; the admin token is the operator's and is not limited)
    max_sandboxes_per_principal: int = 50
    creates_per_minute: int = 120

    def admit_create(self, principal: str, running: int, recent: list[float],
                     now: float) -> str | None:
        """Why a create by `principal` must wait (None: it may go). `recent` holds the
        times of its creates in the last minute (pruned here)."""
        if principal == "admin":
            return None
        recent[:] = [t for t in recent if now - t < 60.0]
        if running >= self.max_sandboxes_per_principal:
            return (f"{principal} has {running} running sandboxes, the limit per principal "
                    f"is {self.max_sandboxes_per_principal}: terminate some and retry")
        if len(recent) >= self.creates_per_minute:
            wait = 60.0 - (now - recent[0])
            return (f"{principal} created {len(recent)} sandboxes in the last minute, the "
                    f"limit is {self.creates_per_minute}: retry in {wait:.0f}s")
        recent.append(now)
        return None

    def memory(self, requested: int | None) -> int:
        value = self.default_memory_mib if requested is None else requested
        if value > self.max_memory_mib:
            raise ValueError(f"memory={value} MiB is more than this host allows "
                             f"({self.max_memory_mib} MiB); ask for less")
        return value

    def disk(self, requested: int | None, unavailable: str | None = None) -> int | None:
        """MiB of writable disk for a sandbox, or None: writes stay in memory. `unavailable`
        says why the runtime cannot enforce a disk quota (the server default then quietly
        falls back to memory; an explicit request is refused)."""
        if requested is None:
            return None if unavailable else (self.default_disk_mib or None)
        if unavailable:
            raise ValueError(f"ephemeral_disk={requested} MiB cannot be given: this server "
                             f"has no disk quotas ({unavailable}); leave ephemeral_disk unset")
        if requested > self.max_disk_mib:
            raise ValueError(f"ephemeral_disk={requested} MiB is more than this server allows "
                             f"({self.max_disk_mib} MiB, SBX_MAX_DISK_MIB); ask for less")
        return requested

    def cpu(self, requested: float | None) -> float | None:
        if requested is not None and requested > self.max_cpu:
            raise ValueError(f"cpu={requested} is more than this host has ({self.max_cpu:g} "
                             "cores); ask for fewer")
        return requested
