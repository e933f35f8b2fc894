"""GPUs for sandboxes and function containers (server layer).

`GpuService` turns a request's `gpu=` (Modal's grammar, `wire.parse_gpus`) into whole GPUs
from the runtime layer's `GpuAllocator`, with the API's typed errors: GpuUnavailableError
when this server can never give it (no GPU, none of that model, no nvproxy, an unsupported
driver), GpuBusyError when every fitting GPU is held now. The manager takes GPUs before a
sandbox boots and gives them back when it finishes; GPU-seconds are counted per principal.
"""

from __future__ import annotations

import logging

from runtimes import GpuAllocationError, GpuAllocator, GpuDevice, Runtime

from ...wire import GpuDeviceInfo, GpuList, parse_gpus
from ...wire import errors as E

log = logging.getLogger("sbx.server.gpus")


class GpuService:
    def __init__(self, allocator: GpuAllocator | None, runtime: Runtime):
        self.allocator = allocator
        self.runtime = runtime

    def unavailable(self) -> str | None:
        if self.allocator is None or not self.allocator.devices:
            why = getattr(self.allocator.inventory, "why", None) if self.allocator else None
            return why or "this server has no GPU"
        return self.runtime.gpu_unavailable

    def take(self, holder: str, principal: str, gpu) -> list[GpuDevice]:
        """The GPUs for a sandbox about to boot ([] for gpu=None)."""
        try:
            requests = parse_gpus(gpu)
        except ValueError as e:
            raise E.InvalidRequestError(str(e)) from None
        if not requests:
            return []
        why = self.unavailable()
        if why:
            raise E.GpuUnavailableError(
                f"gpu={gpu!r} cannot be served here: {why}. Leave gpu unset to run on CPU, "
                "or run `sbx doctor` on the server")
        assert self.allocator is not None
        try:
            got = self.allocator.allocate(holder, principal, requests)
        except GpuAllocationError as e:
            raise (E.GpuBusyError if e.busy else E.GpuUnavailableError)(str(e)) from None
        log.info("%s holds GPU %s", holder, ", ".join(f"{d.index} ({d.name})" for d in got))
        return got

    def give_back(self, holder: str) -> None:
        if self.allocator is not None:
            used = self.allocator.release(holder)
            if used:
                log.info("%s gave back its GPUs after %.1f GPU-seconds", holder, used)

    def reconcile(self, live: set[str]) -> None:
        if self.allocator is not None:
            for holder in self.allocator.reconcile(live):
                log.info("GPUs of %s freed: it did not survive the restart", holder)

    def listing(self, principal: str, admin: bool) -> GpuList:
        alloc = self.allocator
        if alloc is None:
            return GpuList(gpus=[], unavailable=self.unavailable())
        holders = alloc.holders()
        gpus = []
        for d in alloc.devices:
            holder = holders.get(d.uuid)
            shown = None
            if holder is not None:
                shown = holder[0] if admin or holder[1] == principal else "another principal"
            gpus.append(GpuDeviceInfo(index=d.index, name=d.name, uuid=d.uuid,
                                      memory_mib=d.memory_mib, mig=d.mig, holder=shown))
        usage = alloc.usage()
        return GpuList(gpus=gpus, driver_version=alloc.inventory.driver_version(),
                       unavailable=self.unavailable(),
                       gpu_seconds=usage if admin else
                       {principal: usage[principal]} if principal in usage else {})
