"""OCI runtime spec for one gVisor sandbox (runtimes layer).

Pure data: builds the `config.json` dict from a ContainerSpec. Must not import the server
or do any I/O; the driver writes the result to the bundle.

Hardening, each a deliberate choice (see ../shared/RUNSC.md):
- image rootfs read-only and shared; writes go to runsc's per-sandbox overlay;
- the agent directory bind-mounted read-only, the agent's socket directory is the
  sandbox's own private directory; the other writable host paths are the volumes its
  principal mounted (directories on a nodev,nosuid ext4: runtimes/_volume_disk.py);
- no_new_privileges, a reduced capability set, rlimits NOFILE and NPROC;
- memory, cpu and pids limits on a per-sandbox cgroup under a parent whose devices
  cgroup denies every device but null and urandom.
"""

from __future__ import annotations

from typing import Any

from .._base import ContainerSpec

AGENT_MOUNT = "/.sbx/agent"
RUN_MOUNT = "/.sbx/run"
AGENT_SOCKET = RUN_MOUNT + "/agent.sock"
AGENT_BOOT = f"import sys; sys.path.insert(0, {AGENT_MOUNT!r}); import sbxagent; sbxagent.main()"

# Docker's default set minus what a sandbox never needs. Root inside gVisor is not host
# root; these only matter against the gVisor kernel itself.
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
# ptrace platform: a guest process that exec'd (sleep) costs 8.0-8.1 host threads (measured:
# 40 idle, 1606 with 196 such processes), so 8 per process let a fork bomb reach pids.max
# just before RLIMIT_NPROC (the sandbox died). A bash bomb (`:(){ :|:& };:`, processes
# that fork and die without exec) churns faster than the host reaps their threads: at 10x
# and 20x it still reached pids.max and killed the sandbox; at 40x it got EAGAIN and the
# sandbox survived 9 runs of 9 on a quiet host (not always under heavy load). The parent cgroup's cap (_cgroups.host_pids_cap) bounds
# all sandboxes together. Root inside is not exempt: gVisor skips the NPROC check only for CAP_SYS_ADMIN or
# CAP_SYS_RESOURCE, which CAPABILITIES leaves out.
THREADS_PER_PROCESS = 40
PIDS_BASE = 40


def pids_limit(nproc: int) -> int:
    """Host pids.max sized so RLIMIT_NPROC (graceful EAGAIN) trips first."""
    return THREADS_PER_PROCESS * nproc + PIDS_BASE


def build_spec(spec: ContainerSpec, *, rootfs: str, agent_dir: str, run_dir: str,
               cgroups_path: str, python: str | None, preload: str | None = None,
               netns: str | None = None, tmp_dir: str | None = None) -> dict[str, Any]:
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    if preload:  # compatibility shim for this runsc (see _compat.py), from the agent dir
        env["LD_PRELOAD"] = preload
    env.update(spec.env)
    if python:
        # imported (not run as a script) so the precompiled .pyc next to it is used
        args = [python, "-I", "-S", "-c", AGENT_BOOT, AGENT_SOCKET]
    else:  # no python3 in the image: a do-nothing PID 1, exec falls back to runsc exec
        args = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]
    caps = list(CAPABILITIES)
    resources: dict[str, Any] = {
        "memory": {"limit": spec.memory_mib * 1024 * 1024},
        "pids": {"limit": pids_limit(spec.nproc)},
    }
    if spec.cpu:
        resources["cpu"] = {"quota": int(spec.cpu * CPU_PERIOD_US), "period": CPU_PERIOD_US}
    linux: dict[str, Any] = {
        "cgroupsPath": cgroups_path,
        "resources": resources,
        "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
        + [{"type": "network", "path": netns} if netns else {"type": "network"}],
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    }
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": spec.nofile, "soft": spec.nofile},
                {"type": "RLIMIT_NPROC", "hard": spec.nproc, "soft": spec.nproc},
            ],
            "noNewPrivileges": True,
        },
        # writable root: writes land in runsc's per-sandbox memory overlay (--overlay2=root:memory),
        # never in the shared image directory (the gofer serves the lower layer read-only);
        # with spec.writable_rootfs the rootfs is the container's own overlay mount instead
        "root": {"path": rootfs, "readonly": False},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            # with a disk quota /tmp is the rootfs's own /tmp (same disk, same quota; without
            # the bind gVisor would mount an in-memory tmpfs there), else a tmpfs in memory
            {"destination": "/tmp", "type": "bind", "source": tmp_dir, "options": ["rbind", "rw"]}
            if tmp_dir else
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": AGENT_MOUNT, "type": "bind", "source": agent_dir,
             "options": ["rbind", "ro"]},
            {"destination": RUN_MOUNT, "type": "bind", "source": run_dir,
             "options": ["rbind", "rw"]},
        ] + [{"destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro"]}
             for src, dst in spec.mounts]
        + [{"destination": dst, "type": "bind", "source": src,
            "options": ["rbind", "ro" if ro else "rw"]} for src, dst, ro in spec.volumes],
        "linux": linux,
    }
