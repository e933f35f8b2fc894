"""GPUs in a gVisor container (runtimes layer): what the OCI spec and runsc need.

A GPU container runs with `--nvproxy`: the sentry proxies the NVIDIA driver's ioctls
(checked against the ABI of the driver versions that runsc knows) instead of passing a
device through. The spec names the GPUs it may use in `linux.devices` (/dev/nvidiactl,
/dev/nvidia-uvm and /dev/nvidia<minor> of each allocated GPU: gVisor's non-Docker mode,
the one GKE's device plugin uses), its own cgroup allows exactly those device numbers, and
the driver's user-space side (libcuda, libnvidia-ml, nvidia-smi: what
nvidia-container-cli mounts for the compute and utility capabilities) is bound read-only
under /usr/local/nvidia, on LD_LIBRARY_PATH and PATH.

`gpu_unavailable(features, runsc)` says why this host cannot run GPU containers (None
when it can): no nvproxy in this runsc, no driver, or a driver whose ABI this runsc does
not support (`runsc nvproxy list-supported-drivers`).
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Iterable

from .._gpu import GpuDevice
from .._hostcmd import run_command
from ._cgroups import DEVICE_ALLOW

CTL = "/dev/nvidiactl"
NVIDIA_MAJOR = 195
CTL_MINOR = 255
LIB_DIR = "/usr/local/nvidia/lib64"
BIN_DIR = "/usr/local/nvidia/bin"
# nvidia-container-cli's compute + utility libraries (sonames) and tools
LIBRARIES = ("libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1",
             "libnvidia-nvvm.so.4", "libcudadebugger.so.1", "libnvidia-cfg.so.1",
             "libnvidia-allocator.so.1", "libnvidia-opencl.so.1", "libnvidia-gpucomp.so")
TOOLS = ("nvidia-smi", "nvidia-debugdump", "nvidia-cuda-mps-control",
         "nvidia-cuda-mps-server")
HOST_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib/x86_64-linux-gnu",
                 "/usr/lib", "/usr/local/nvidia/lib64")
HOST_BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/local/nvidia/bin")
INSTALL_RUNSC = "install a current runsc (scripts/install-system-deps.sh, docs/gpu.md)"


def driver_version() -> str | None:
    """The loaded NVIDIA kernel module's version (no NVML needed)."""
    for path in ("/sys/module/nvidia/version", "/proc/driver/nvidia/version"):
        try:
            with open(path) as f:
                m = re.search(r"(\d+\.\d+(?:\.\d+)?)", f.read())
        except OSError:
            continue
        if m:
            return m.group(1)
    return None


async def supported_drivers(binary: str) -> list[str] | None:
    """The driver versions this runsc's nvproxy supports, None when it cannot say."""
    res = await run_command([binary, "nvproxy", "list-supported-drivers"], check=False,
                            timeout_s=30)
    versions = re.findall(r"^\s*(\d+\.\d+(?:\.\d+)?)\s*$", res.out, re.M)
    return versions if res.returncode == 0 and versions else None


async def gpu_unavailable(has_nvproxy: bool, binary: str) -> str | None:
    if not os.path.exists(CTL):
        return f"this host has no NVIDIA GPU (no {CTL})"
    if not has_nvproxy:
        return f"this runsc has no --nvproxy (GPU support): {INSTALL_RUNSC}"
    version = driver_version()
    if version is None:
        return "the NVIDIA kernel module is not loaded (no /sys/module/nvidia/version)"
    known = await supported_drivers(binary)
    if known is not None and version not in known:
        return (f"this runsc's nvproxy does not support driver {version} (it supports "
                f"{', '.join(known[-6:])}{' and older' if len(known) > 6 else ''}): install "
                "one of those drivers, or a runsc that supports this one")
    return None


def parent_allow() -> tuple[str, ...]:
    """The device rules of GPU containers' parent cgroup: the usual two, and every NVIDIA
    device (each container's own cgroup then allows only its GPUs)."""
    majors = {NVIDIA_MAJOR, *(ma for _, ma, _ in _uvm())}
    return (*DEVICE_ALLOW, *(f"c {m}:* rw" for m in sorted(majors)))


def _char(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _uvm() -> list[tuple[str, int, int]]:
    out = []
    for path in ("/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"):
        num = _char(path)
        if num is not None:
            out.append((path, *num))
    return out


def device_entries(gpus: Iterable[GpuDevice]) -> tuple[list[dict], list[dict]]:
    """(linux.devices, linux.resources.devices) for exactly these GPUs."""
    nodes = [("/dev/nvidiactl", NVIDIA_MAJOR, CTL_MINOR), *_uvm(),
             *((f"/dev/nvidia{g.minor}", NVIDIA_MAJOR, g.minor) for g in gpus)]
    devices = [{"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666,
                "uid": 0, "gid": 0} for p, ma, mi in nodes]
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "r"},
             *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rw"}
               for _, ma, mi in nodes)]
    return devices, rules


def _find(name: str, dirs: Iterable[str]) -> str | None:
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return os.path.realpath(path)
        hits = sorted(glob.glob(os.path.join(d, name + ".*")))  # libnvidia-gpucomp.so.550...
        if hits:
            return os.path.realpath(hits[0])
    return None


def driver_mounts() -> list[tuple[str, str]]:
    """(host file, path inside) for the driver's user-space libraries and tools found on
    this host, each bound read-only."""
    out = []
    for lib in LIBRARIES:
        host = _find(lib, HOST_LIB_DIRS)
        if host:  # by its soname; one without (versioned in full) by its own name
            out.append((host, f"{LIB_DIR}/{lib if '.so.' in lib else os.path.basename(host)}"))
            if lib == "libcuda.so.1":  # what build tools and some loaders open
                out.append((host, f"{LIB_DIR}/libcuda.so"))
    for tool in TOOLS:
        host = _find(tool, HOST_BIN_DIRS)
        if host:
            out.append((host, f"{BIN_DIR}/{tool}"))
    return out


def gpu_env(env: dict[str, str], gpus: list[GpuDevice]) -> dict[str, str]:
    """The container's env with the driver's directories on the search paths."""
    out = dict(env)
    ld = out.get("LD_LIBRARY_PATH")
    out["LD_LIBRARY_PATH"] = f"{LIB_DIR}:{ld}" if ld else LIB_DIR
    out["PATH"] = f"{BIN_DIR}:{out['PATH']}" if out.get("PATH") else BIN_DIR
    out["NVIDIA_VISIBLE_DEVICES"] = ",".join(g.uuid for g in gpus)
    out["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    return out


def add_gpus(config: dict[str, Any], gpus: list[GpuDevice]) -> None:
    """Give the built OCI spec these GPUs (devices, device cgroup, driver files, env)."""
    devices, rules = device_entries(gpus)
    linux = config["linux"]
    linux["devices"] = devices
    linux.setdefault("resources", {})["devices"] = rules
    config["mounts"].extend({"destination": dst, "type": "bind", "source": src,
                             "options": ["rbind", "ro", "nosuid"]}
                            for src, dst in driver_mounts())
    env = dict(e.split("=", 1) for e in config["process"]["env"])
    config["process"]["env"] = [f"{k}={v}" for k, v in gpu_env(env, gpus).items()]
