"""Host cgroups for gVisor sandboxes (runtimes layer). Must not import the server.

Every sandbox's cgroupsPath lives under one parent per SBX_HOME. On cgroup v1 the parent's
devices controller denies every device except /dev/null and read-only /dev/urandom, so a
device node smuggled into a bind mount cannot reach a host device through the gofer. The
parent's pids.max caps all sandboxes together below the host's own limit (`host_pids_cap`),
so several fork bombs at once cannot take the last PIDs the host needs.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("sbx.runtime.cgroups")

CGROUP_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices", "freezer", "cpuset", "blkio")
DEVICE_ALLOW = ("c 1:3 rwm", "c 1:9 r")


def version() -> int:
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return 2
    return 1


def _hierarchies() -> list[str]:
    """Every mounted v1 hierarchy (controllers and named ones such as name=systemd: runsc
    creates the sandbox's cgroup in each, so each must be cleaned)."""
    try:
        names = sorted(os.listdir(CGROUP_ROOT))
    except OSError:
        return []
    return [n for n in names if n in CONTROLLERS or (
        os.path.isdir(os.path.join(CGROUP_ROOT, n))
        and not os.path.islink(os.path.join(CGROUP_ROOT, n))
        and os.path.exists(os.path.join(CGROUP_ROOT, n, "cgroup.procs")))]


def _controller_dirs(rel: str) -> list[str]:
    rel = rel.strip("/")
    if version() == 2:
        return [os.path.join(CGROUP_ROOT, rel)]
    return [os.path.join(CGROUP_ROOT, c, rel) for c in _hierarchies()
            if os.path.isdir(os.path.join(CGROUP_ROOT, c))]


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def host_pids_cap() -> int | None:
    """Host tasks all sandboxes together may use: three quarters of the kernel's limit
    (pid_max and threads-max, the smaller), leaving the rest to the host."""
    limits = []
    for path in ("/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"):
        try:
            with open(path) as f:
                limits.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
    return min(limits) * 3 // 4 if limits else None


def _cap_pids(parent: str) -> None:
    cap = host_pids_cap()
    rel = parent.strip("/")
    path = os.path.join(CGROUP_ROOT, rel, "pids.max") if version() == 2 else \
        os.path.join(CGROUP_ROOT, "pids", rel, "pids.max")
    if cap is None:
        return
    try:
        _write(path, str(cap))
    except OSError as e:
        log.warning("could not cap the sandboxes' tasks at %d in %s: %s", cap, path, e)


def ensure_parent(parent: str, allow: tuple[str, ...] = DEVICE_ALLOW) -> bool:
    """Create the parent cgroups; return True when the device lockdown is in force (the
    devices in `allow` and no other: GPU containers' parent adds NVIDIA's)."""
    for d in _controller_dirs(parent):
        os.makedirs(d, exist_ok=True)
    _cap_pids(parent)
    if version() == 2:
        log.warning("cgroup v2: device lockdown relies on runsc; devices cgroup not set")
        return False
    dev = os.path.join(CGROUP_ROOT, "devices", parent.strip("/"))
    try:
        with open(os.path.join(dev, "devices.list")) as f:
            current = f.read().split()
        if current != " ".join(allow).split():
            _write(os.path.join(dev, "devices.deny"), "a")
            for rule in allow:
                _write(os.path.join(dev, "devices.allow"), rule)
        with open(os.path.join(dev, "devices.list")) as f:
            return "a *:* rwm" not in f.read()
    except OSError as e:
        log.warning("could not lock down devices cgroup %s: %s", dev, e)
        return False


def _memory_file(rel: str, v2: str, v1: str) -> str:
    """A file of the memory cgroup `rel`: named `v2` on cgroup v2, `v1` on v1."""
    if version() == 2:
        return os.path.join(CGROUP_ROOT, rel.strip("/"), v2)
    return os.path.join(CGROUP_ROOT, "memory", rel.strip("/"), v1)


def oom_killed(rel: str) -> bool:
    """True if the memory cgroup's OOM killer fired (v1 oom_control / v2 memory.events)."""
    path, key = _memory_file(rel, "memory.events", "memory.oom_control"), "oom_kill"
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key and int(value) > 0:
                    return True
    except (OSError, ValueError):
        pass
    return False


def memory_bytes(rel: str) -> int | None:
    """The memory cgroup's current use (v1 memory.usage_in_bytes / v2 memory.current)."""
    try:
        with open(_memory_file(rel, "memory.current", "memory.usage_in_bytes")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def pids(rel: str) -> set[int]:
    out: set[int] = set()
    for d in _controller_dirs(rel):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                out.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def remove(rel: str) -> bool:
    """Kill what is left in the cgroup and remove it everywhere. True if all gone."""
    for pid in pids(rel):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ok = True
    for d in _controller_dirs(rel):
        if not os.path.isdir(d):
            continue
        # children first (runsc may create sub-cgroups)
        for root, dirs, _ in os.walk(d, topdown=False):
            for name in dirs:
                try:
                    os.rmdir(os.path.join(root, name))
                except OSError:
                    pass
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.debug("rmdir %s: %s", d, e)
            ok = False
    return ok


def children(parent: str) -> set[str]:
    names: set[str] = set()
    for d in _controller_dirs(parent):
        try:
            names.update(e.name for e in os.scandir(d) if e.is_dir())
        except OSError:
            pass
    return names


def remove_parent(parent: str) -> None:
    """Remove the parent cgroups if no sandbox cgroup is left under them."""
    for d in _controller_dirs(parent):
        try:
            os.rmdir(d)
        except OSError:
            pass  # still has children, or already gone
