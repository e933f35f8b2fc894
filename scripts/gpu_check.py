"""The real-GPU check behind scripts/gpu-check.sh (runs on a lent GPU machine; needs root,
runsc and the repo on PYTHONPATH, not the server's dependencies).

It goes through the project's own runtime layer, as the server does: the NVML inventory,
exclusive allocation, `GVisorRuntime.gpu_unavailable` (nvproxy present? the driver
supported?), then one GPU sandbox booted by `GVisorRuntime.create` with the host's own root
filesystem as its read-only image (the machine has no network for a base image, and its
root holds torch), in which it runs nvidia-smi, scripts/gpu_probe.py (CUDA driver API and a
PTX kernel) and a torch check. Prints one line per step; exit 0 only when all passed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

from runtimes import ContainerSpec, ExecSpec, ExitFrame, GpuAllocator, host_inventory
from runtimes.gvisor import GVisorRuntime
from sandbox_service.wire import parse_gpus

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH = ("import torch; ok = torch.cuda.is_available(); print('torch', torch.__version__, "
         "'cuda', ok, torch.cuda.get_device_name(0) if ok else '-'); "
         "x = torch.ones(1 << 20, device='cuda'); print('torch sum', (x * 2).sum().item())")


async def run(rt: GVisorRuntime, cid: str, argv: list[str], timeout_s: float = 120) -> int:
    t0 = time.monotonic()
    stream = await rt.exec(cid, ExecSpec(argv, timeout_s=timeout_s))
    code = None
    async for ev in stream.events():
        if isinstance(ev, ExitFrame):
            code = ev.exit_code
        else:
            sys.stdout.write(ev[1].decode(errors="replace"))
    await stream.close()
    print(f"== {' '.join(argv)[:60]!r}: exit {code} in {time.monotonic() - t0:.1f}s", flush=True)
    return code if code is not None else -1


async def main(dry: bool, force_abi: str | None) -> int:
    """dry (--cpu-dry-run): the same boot with no GPU, to check this script on any host.
    force_abi (--force-abi=VERSION): an experiment, never the service's behaviour: run
    nvproxy with the ABI of a driver this runsc knows (`--nvproxy-driver-version`) on a
    driver it does not, to see how far a newer driver gets."""
    inv = host_inventory()
    devices = inv.devices()
    print(f"== inventory: {devices or getattr(inv, 'why', '')}; driver {inv.driver_version()}")
    if not devices and not dry:
        return 2
    state = tempfile.mkdtemp(prefix="sbx-gpu-check-")
    alloc = GpuAllocator(os.path.join(state, "gpus.json"), inv)
    rt = GVisorRuntime(os.path.join(state, "runtime"), runsc_binary=os.environ.get("SBX_RUNSC"),
                       extra_flags=[f"--nvproxy-driver-version={force_abi}"] if force_abi else [])
    await rt.start()
    if force_abi and rt.gpu_unavailable:
        print(f"== EXPERIMENT: ignoring the refusal ({rt.gpu_unavailable}), ABI {force_abi}")
        rt.gpu_unavailable = None
    print(f"== runsc: {rt.features.version}; platform {rt.platform}; "
          f"gpu_unavailable: {rt.gpu_unavailable}", flush=True)
    if rt.gpu_unavailable and not dry:
        print(f"REFUSED {rt.gpu_unavailable}")
        await rt.close()
        return 3
    # runsc makes the spec's mount points (/.sbx/agent, /.sbx/run) in the rootfs directory
    # itself, here the host's /: remove them afterwards if this run made them
    made = [p for p in ("/.sbx/agent", "/.sbx/run", "/.sbx") if not os.path.exists(p)]
    cid = "sb-gpucheck" + os.urandom(4).hex()
    gpus = [] if dry else alloc.allocate(cid, "check", parse_gpus("any"))
    print(f"== allocated {[g.uuid for g in gpus]}", flush=True)
    failed = 0
    try:
        t0 = time.monotonic()
        await rt.create(ContainerSpec(cid, "/", memory_mib=16384, gpus=tuple(gpus),
                                      env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                           "/usr/bin:/sbin:/bin"}))
        print(f"== booted a GPU sandbox in {time.monotonic() - t0:.2f}s", flush=True)
        steps = ([["sh", "-c", "echo booted; ls /dev"], [sys.executable, "-c", "print(1)"]]
                 if dry else
                 [["nvidia-smi"], ["sh", "-c", "ls -l /dev | grep nvidia"],
                  [sys.executable, os.path.join(HERE, "gpu_probe.py")],
                  [sys.executable, "-c", TORCH]])
        for argv in steps:
            failed += await run(rt, cid, argv) != 0
    except Exception as e:  # noqa: BLE001 (report and go on to clean up)
        print(f"FAILED {type(e).__name__}: {e}")
        failed += 1
        log = os.path.join(state, "runtime", "sandboxes", cid, "runsc.log")
        if os.path.exists(log):
            print(open(log, errors="replace").read()[-3000:])
    finally:
        await rt.destroy(cid)
        for path in made:
            try:
                os.rmdir(path)
            except OSError:
                pass
        print(f"== released: {alloc.release(cid)} GPU-seconds; usage {alloc.usage()}")
        await rt.close()
    print("ALL PASSED" if not failed else f"{failed} step(s) FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    force = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--force-abi=")), None)
    sys.exit(asyncio.run(main("--cpu-dry-run" in sys.argv, force)))
