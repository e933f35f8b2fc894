"""GPUs with the real runsc and a real server.

Without an NVIDIA GPU (CI): a GPU container is refused by the runtime before anything is
made, and the server answers `gpu=` with a typed, actionable refusal. On a GPU host whose
driver this runsc's nvproxy supports: inside a sandbox, nvidia-smi and a small CUDA program
(scripts/gpu_probe.py) see the GPU, and the GPU is free again after the sandbox ends.
"""

from __future__ import annotations

import glob
import os

import pytest

import sandbox_service as sbx
from runtimes import ContainerSpec, GpuDevice
from runtimes.gvisor import RuntimeUnavailable
from sandbox_service.wire._ids import new_id

HAS_GPU = os.path.exists("/dev/nvidiactl")
PROBE = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "gpu_probe.py")
no_gpu_only = pytest.mark.skipif(HAS_GPU, reason="this host has an NVIDIA GPU")


@no_gpu_only
async def test_the_runtime_refuses_a_gpu_container_without_a_gpu(runtime, server):
    rootfs = glob.glob(os.path.join(server.home, "images", "im-*", "rootfs"))[0]
    assert runtime.gpu_unavailable and "no NVIDIA GPU" in runtime.gpu_unavailable
    cid = new_id("sandbox")
    fake = GpuDevice(index=0, minor=0, uuid="GPU-0000", name="NVIDIA H100", memory_mib=81559)
    with pytest.raises(RuntimeUnavailable, match="no GPU containers here: this host has no"):
        await runtime.create(ContainerSpec(cid, rootfs, gpus=(fake,)))
    assert not os.path.exists(os.path.join(runtime.state_dir, "sandboxes", cid))
    assert cid not in runtime.runsc.known_ids()


@no_gpu_only
def test_the_server_refuses_gpu_sandboxes_saying_why(server, api):
    info = api.get("/v1/gpus").json()
    assert info["gpus"] == [] and "no NVIDIA GPU" in info["unavailable"]
    with pytest.raises(sbx.GpuUnavailableError, match="no NVIDIA GPU") as e:
        sbx.Sandbox.create(gpu="any")
    assert isinstance(e.value, sbx.RuntimeUnavailableError)
    assert "Leave gpu unset" in str(e.value)
    # nothing half-made: no sandbox of ours is listed
    assert all(not s.get("gpus") for s in api.get("/v1/sandboxes").json()["sandboxes"])


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU (/dev/nvidiactl)")
def test_nvidia_smi_and_cuda_inside_a_sandbox(server, api):
    info = api.get("/v1/gpus").json()
    if info["unavailable"]:
        pytest.skip(f"GPU host, but no GPU containers here: {info['unavailable']}")
    with open(PROBE) as f:
        probe = f.read()
    sb = sbx.Sandbox.create(gpu="any", timeout=300)
    try:
        held = [g for g in api.get("/v1/gpus").json()["gpus"] if g["holder"]]
        assert len(held) == 1
        p = sb.exec("nvidia-smi", "-L")
        out = p.stdout.read()
        assert p.wait() == 0 and held[0]["uuid"] in out, out + p.stderr.read()
        p = sb.exec("python3", "-c", probe)
        out = p.stdout.read()
        assert p.wait() == 0 and "ok kernel" in out, out + p.stderr.read()
        # the sandbox sees its GPU's device nodes and no others
        p = sb.exec("sh", "-c", "ls /dev | grep nvidia")
        names = set(p.stdout.read().split())
        assert "nvidiactl" in names and "nvidia-uvm" in names
        assert len([n for n in names if n[len("nvidia"):].isdigit()]) == 1
    finally:
        sb.terminate()
    sb.wait(raise_on_termination=False)
    assert not any(g["holder"] for g in api.get("/v1/gpus").json()["gpus"])
