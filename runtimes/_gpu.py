"""The host's GPUs: inventory through NVML and exclusive allocation (runtimes layer).

`Nvml` is the library boundary: `PynvmlInventory` asks the driver through nvidia-ml-py
(imported only here, only when a GPU is asked about); tests hand `GpuAllocator` a fake.
`GpuAllocator` gives whole GPUs to one container each, never shares one, and keeps its
holdings in a JSON file so a server restart neither loses nor double-books them:
`reconcile(live)` on start frees what no live container holds. It also counts
GPU-seconds per principal (held time x GPUs), kept in the same file.

Where the devices go into the container (runsc's nvproxy, the driver's libraries bound
read-only): gvisor/_gpu_spec.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from typing import Protocol, Sequence

log = logging.getLogger("sbx.runtime.gpu")


@dataclasses.dataclass(frozen=True)
class GpuDevice:
    index: int       # NVML's index
    minor: int       # /dev/nvidia<minor>
    uuid: str        # "GPU-8f3c..."
    name: str        # "NVIDIA H100 80GB HBM3"
    memory_mib: int
    mig: bool = False


class Nvml(Protocol):
    def devices(self) -> list[GpuDevice]: ...
    def driver_version(self) -> str | None: ...


class NoGpus:
    """The inventory of a host without NVIDIA's driver: nothing, and why."""

    def __init__(self, why: str):
        self.why = why

    def devices(self) -> list[GpuDevice]:
        return []

    def driver_version(self) -> str | None:
        return None


class PynvmlInventory:
    """The real inventory (nvidia-ml-py). Read once: GPUs do not come and go while the
    server runs (a driver reload needs a server restart)."""

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py; raises ImportError without it

        self._nvml = pynvml
        pynvml.nvmlInit()  # NVMLError without a driver (libnvidia-ml.so.1)
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            self._version = version.decode() if isinstance(version, bytes) else str(version)
            self._devices = [self._device(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()

    def _device(self, index: int) -> GpuDevice:
        n = self._nvml
        h = n.nvmlDeviceGetHandleByIndex(index)
        text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        try:
            mig = n.nvmlDeviceGetMigMode(h)[0] == n.NVML_DEVICE_MIG_ENABLE
        except n.NVMLError:  # not MIG-capable
            mig = False
        return GpuDevice(index=index, minor=int(n.nvmlDeviceGetMinorNumber(h)),
                         uuid=text(n.nvmlDeviceGetUUID(h)), name=text(n.nvmlDeviceGetName(h)),
                         memory_mib=int(n.nvmlDeviceGetMemoryInfo(h).total) >> 20, mig=mig)

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def driver_version(self) -> str | None:
        return self._version


def host_inventory() -> Nvml:
    """NVML's view of this host, or NoGpus saying why there is none."""
    if not os.path.exists("/dev/nvidiactl"):
        return NoGpus("this host has no NVIDIA GPU (no /dev/nvidiactl)")
    try:
        return PynvmlInventory()
    except ImportError:
        return NoGpus("nvidia-ml-py is not installed: pip install nvidia-ml-py")
    except Exception as e:  # noqa: BLE001 (pynvml.NVMLError and friends)
        return NoGpus(f"NVML did not answer ({e}): check that the NVIDIA driver is loaded "
                      "(nvidia-smi)")


class GpuAllocationError(Exception):
    """`busy` tells "none free now" (retry later) from "never here"."""

    def __init__(self, message: str, *, busy: bool = False):
        super().__init__(message)
        self.busy = busy


class GpuAllocator:
    """Whole GPUs, each to one holder (a container id) at a time."""

    def __init__(self, state_path: str, inventory: Nvml):
        self.path = state_path
        self.inventory = inventory
        self.devices = inventory.devices()
        self._lock = threading.Lock()  # callers are on one loop; the file is not
        self._held: dict[str, dict] = {}  # uuid -> {"holder", "principal", "since"}
        self.gpu_seconds: dict[str, float] = {}
        self._load()

    # ---- persistence -------------------------------------------------------------------
    def _load(self) -> None:
        try:
            with open(self.path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("GPU state %s unreadable (%s): starting with every GPU free",
                        self.path, e)
            return
        known = {d.uuid for d in self.devices}
        self._held = {u: h for u, h in state.get("held", {}).items() if u in known}
        self.gpu_seconds = {str(k): float(v) for k, v in state.get("gpu_seconds", {}).items()}

    def _save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
                  "w") as f:
            json.dump({"held": self._held, "gpu_seconds": self.gpu_seconds}, f)
        os.replace(tmp, self.path)

    # ---- allocation --------------------------------------------------------------------
    def allocate(self, holder: str, principal: str, requests: Sequence) -> list[GpuDevice]:
        """GPUs for `holder`: the first of `requests` (GpuRequest, fallbacks in order)
        that can be met now. Raises GpuAllocationError(busy=True) when some request could
        be met by this host but not now, busy=False when none ever can."""
        with self._lock:
            usable = [d for d in self.devices if not d.mig]
            possible = False
            for req in requests:
                fits = [d for d in usable if req.matches(d.name, d.memory_mib)]
                if len(fits) < req.count:
                    continue
                possible = True
                free = [d for d in fits if d.uuid not in self._held]
                if len(free) >= req.count:
                    got = free[:req.count]
                    now = time.time()
                    for d in got:
                        self._held[d.uuid] = {"holder": holder, "principal": principal,
                                              "since": now}
                    self._save()
                    return got
            raise GpuAllocationError(self._why(requests, possible), busy=possible)

    def _why(self, requests: Sequence, possible: bool) -> str:
        asked = " or ".join(str(r) for r in requests)
        have = ", ".join(sorted({d.name for d in self.devices})) or "none"
        if possible:
            return (f"every GPU that fits gpu={asked!r} is in use ({len(self._held)} of "
                    f"{len(self.devices)} held): retry when a GPU sandbox or function "
                    "container finishes, or ask for another model")
        mig = [d.name for d in self.devices if d.mig]
        extra = (f"; {len(mig)} GPU(s) in MIG mode are not given to sandboxes (gVisor's "
                 "nvproxy does not support MIG): disable MIG with nvidia-smi -mig 0") if mig else ""
        return (f"this server has no GPU that fits gpu={asked!r} (it has: {have}){extra}: "
                "ask for one of those, or gpu='any'")

    def release(self, holder: str) -> float:
        """Free what `holder` holds; returns the GPU-seconds it used (also added to its
        principal's count)."""
        with self._lock:
            mine = [u for u, h in self._held.items() if h["holder"] == holder]
            if not mine:
                return 0.0
            now, used = time.time(), 0.0
            for u in mine:
                h = self._held.pop(u)
                seconds = max(0.0, now - float(h["since"]))
                used += seconds
                self.gpu_seconds[h["principal"]] = self.gpu_seconds.get(h["principal"], 0.0) + seconds
            self._save()
            return used

    def reconcile(self, live: set[str]) -> list[str]:
        """After a restart: free GPUs whose holder is no longer alive (counted up to now).
        Returns the holders freed."""
        gone = sorted({h["holder"] for h in self._held.values() if h["holder"] not in live})
        for holder in gone:
            self.release(holder)
        return gone

    def held_by(self, holder: str) -> list[GpuDevice]:
        with self._lock:
            uuids = {u for u, h in self._held.items() if h["holder"] == holder}
        return [d for d in self.devices if d.uuid in uuids]

    def holders(self) -> dict[str, tuple[str, str]]:
        """uuid -> (holder, principal)."""
        with self._lock:
            return {u: (h["holder"], h["principal"]) for u, h in self._held.items()}

    def usage(self) -> dict[str, float]:
        """GPU-seconds per principal, the GPUs held now counted up to now."""
        with self._lock:
            out = dict(self.gpu_seconds)
            now = time.time()
            for h in self._held.values():
                out[h["principal"]] = out.get(h["principal"], 0.0) + max(0.0, now - h["since"])
            return out
