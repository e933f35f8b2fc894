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
    nproc: int = 512
    nofile: int = 4096
    max_sandboxes: int = 200

    def memory(self, requested: int | None) -> int:
        value = self.default_memory_mib if requested is None else requested
        if value > self.max_memory_mib:
            raise ValueError(f"memory={value} MiB is more than this host allows "
                             f"({self.max_memory_mib} MiB); ask for less")
        return value

    def cpu(self, requested: float | None) -> float | None:
        if requested is not None and requested > self.max_cpu:
            raise ValueError(f"cpu={requested} is more than this host has ({self.max_cpu:g} "
                             "cores); ask for fewer")
        return requested
