"""GPUs without a GPU: Modal's grammar, the allocator against a fake NVML (the library
boundary), and the OCI spec a GPU container gets. The real-GPU checks are
scripts/gpu-check.sh (and tests/runtime/test_gpu_real.py, skipped without a GPU)."""

from __future__ import annotations

import json
import os

import pytest

from runtimes import GpuAllocationError, GpuAllocator, GpuDevice
from runtimes.gvisor import _gpu_spec
from sandbox_service.wire import GpuRequest, parse_gpu, parse_gpus

pytestmark = pytest.mark.fast

H100_NAME = "NVIDIA H100 80GB HBM3"


class FakeNvml:
    """What nvidia-ml-py would report on a mixed host."""

    def __init__(self, devices: list[GpuDevice], version: str = "550.90.07"):
        self._devices, self._version = devices, version

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def driver_version(self) -> str | None:
        return self._version


def mixed() -> FakeNvml:
    return FakeNvml([
        GpuDevice(0, 0, "GPU-h100-a", H100_NAME, 81559),
        GpuDevice(1, 1, "GPU-h100-b", H100_NAME, 81559),
        GpuDevice(2, 2, "GPU-a100-40", "NVIDIA A100-SXM4-40GB", 40960),
        GpuDevice(3, 3, "GPU-a100-80-mig", "NVIDIA A100-SXM4-80GB", 81920, mig=True),
        GpuDevice(4, 5, "GPU-t4", "Tesla T4", 15360),
    ])


# ---- grammar ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, model, count", [
    ("H100", "H100", 1), ("h100", "H100", 1), ("H100!", "H100", 1), ("a100-80gb:2", "A100-80GB", 2),
    ("A100-40GB", "A100-40GB", 1), ("any", "ANY", 1), ("ANY:8", "ANY", 8), ("L40S:4", "L40S", 4),
    ("a10g", "A10G", 1), ("B200+", "B200", 1), (" T4 ", "T4", 1),
])
def test_modal_gpu_strings_parse(text, model, count):
    assert parse_gpu(text) == GpuRequest(model, count)


@pytest.mark.parametrize("bad, says", [
    ("H100:0", "1 to 8"), ("H100:9", "1 to 8"), ("V100", "known models"), ("H100:x", "not a GPU"),
    ("", "not a GPU"), (True, "not a GPU"), (2, "not a GPU"), ("A100-20GB", "known models"),
])
def test_bad_gpu_strings_say_what_to_write(bad, says):
    with pytest.raises(ValueError, match=says) as e:
        parse_gpu(bad)
    assert "'H100'" in str(e.value) or "count" in str(e.value)


def test_lists_are_fallbacks_and_none_is_no_gpu():
    assert parse_gpus(None) == []
    assert parse_gpus(["H100", "a100:2"]) == [GpuRequest("H100"), GpuRequest("A100", 2)]
    with pytest.raises(ValueError, match="lists no GPU"):
        parse_gpus([])


@pytest.mark.parametrize("req, name, mib, ok", [
    ("H100", H100_NAME, 81559, True), ("H100", "NVIDIA H200", 143771, False),
    ("H200", "NVIDIA H200", 143771, True), ("A100", "NVIDIA A100-SXM4-40GB", 40960, True),
    ("A100", "NVIDIA A100 80GB PCIe", 81920, True),
    ("A100-80GB", "NVIDIA A100-SXM4-40GB", 40960, False),
    ("A100-80GB", "NVIDIA A100 80GB PCIe", 81920, True),
    ("A100-40GB", "NVIDIA A100-PCIE-40GB", 40536, True), ("T4", "Tesla T4", 15360, True),
    ("L4", "NVIDIA L40S", 46068, False), ("L40S", "NVIDIA L40S", 46068, True),
    ("A10G", "NVIDIA A10G", 23028, True), ("A10", "NVIDIA A100-SXM4-40GB", 40960, False),
    ("any", "Tesla T4", 15360, True),
])
def test_a_request_matches_nvml_names(req, name, mib, ok):
    assert parse_gpu(req).matches(name, mib) is ok


# ---- allocation ---------------------------------------------------------------------------

def test_whole_gpus_go_to_one_holder_each(tmp_path):
    alloc = GpuAllocator(str(tmp_path / "gpus.json"), mixed())
    a = alloc.allocate("sb-a", "alice", [parse_gpu("H100")])
    b = alloc.allocate("sb-b", "bob", [parse_gpu("H100")])
    assert {a[0].uuid, b[0].uuid} == {"GPU-h100-a", "GPU-h100-b"}
    with pytest.raises(GpuAllocationError, match="in use") as e:
        alloc.allocate("sb-c", "alice", [parse_gpu("H100")])
    assert e.value.busy
    # a fallback list takes the first that can be met now
    c = alloc.allocate("sb-c", "alice", [parse_gpu("H100"), parse_gpu("A100")])
    assert [d.uuid for d in c] == ["GPU-a100-40"]
    alloc.release("sb-a")
    assert alloc.allocate("sb-d", "carol", [parse_gpu("H100")])[0].uuid == "GPU-h100-a"


def test_what_the_host_can_never_give_is_not_busy(tmp_path):
    alloc = GpuAllocator(str(tmp_path / "gpus.json"), mixed())
    for asked in ("H200", "H100:3", "A100-80GB"):
        with pytest.raises(GpuAllocationError) as e:
            alloc.allocate("sb-x", "alice", [parse_gpu(asked)])
        assert not e.value.busy and "no GPU that fits" in str(e.value)
        assert H100_NAME in str(e.value)  # says what there is
    with pytest.raises(GpuAllocationError, match="MIG mode"):  # the only 80GB A100 is MIG
        alloc.allocate("sb-x", "alice", [parse_gpu("A100-80GB")])
    # a count spans devices: any:4 takes four, never the MIG one
    got = alloc.allocate("sb-y", "alice", [parse_gpu("any:4")])
    assert "GPU-a100-80-mig" not in {d.uuid for d in got} and len(got) == 4
    with pytest.raises(GpuAllocationError) as e:
        alloc.allocate("sb-z", "alice", [parse_gpu("any")])
    assert e.value.busy


def test_holdings_and_gpu_seconds_survive_a_restart(tmp_path, monkeypatch):
    path = str(tmp_path / "gpus.json")
    clock = [1000.0]
    monkeypatch.setattr("runtimes._gpu.time.time", lambda: clock[0])
    alloc = GpuAllocator(path, mixed())
    alloc.allocate("sb-live", "alice", [parse_gpu("H100:2")])
    alloc.allocate("sb-dead", "bob", [parse_gpu("T4")])
    clock[0] = 1010.0
    assert alloc.usage() == {"alice": 20.0, "bob": 10.0}
    assert os.stat(path).st_mode & 0o777 == 0o600
    # the server restarts: one holder survived, the other did not
    again = GpuAllocator(path, mixed())
    assert {d.uuid for d in again.held_by("sb-live")} == {"GPU-h100-a", "GPU-h100-b"}
    with pytest.raises(GpuAllocationError) as e:  # never double-booked after a restart
        again.allocate("sb-new", "carol", [parse_gpu("H100")])
    assert e.value.busy
    clock[0] = 1015.0
    assert again.reconcile({"sb-live"}) == ["sb-dead"]
    assert again.gpu_seconds == {"bob": 15.0}
    assert again.allocate("sb-new", "carol", [parse_gpu("T4")])[0].uuid == "GPU-t4"
    clock[0] = 1020.0
    assert again.release("sb-live") == 40.0
    assert GpuAllocator(path, mixed()).gpu_seconds == {"bob": 15.0, "alice": 40.0}


def test_a_gpu_that_left_the_host_is_forgotten_and_bad_state_is_survived(tmp_path):
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({"held": {"GPU-gone": {"holder": "sb-a", "principal": "a",
                                                      "since": 1.0}}}))
    alloc = GpuAllocator(str(path), mixed())
    assert alloc.holders() == {}
    path.write_text("{not json")
    assert GpuAllocator(str(path), mixed()).holders() == {}


# ---- the OCI spec -------------------------------------------------------------------------

def _driver_tree(tmp_path) -> tuple[str, str]:
    lib, bin_ = tmp_path / "lib", tmp_path / "bin"
    lib.mkdir()
    bin_.mkdir()
    (lib / "libcuda.so.550.90.07").write_bytes(b"elf")
    os.symlink("libcuda.so.550.90.07", lib / "libcuda.so.1")
    (lib / "libnvidia-ml.so.550.90.07").write_bytes(b"elf")
    os.symlink("libnvidia-ml.so.550.90.07", lib / "libnvidia-ml.so.1")
    (lib / "libnvidia-gpucomp.so.550.90.07").write_bytes(b"elf")
    (bin_ / "nvidia-smi").write_bytes(b"elf")
    return str(lib), str(bin_)


def test_the_spec_names_exactly_the_allocated_gpus(tmp_path, monkeypatch):
    lib, bin_ = _driver_tree(tmp_path)
    monkeypatch.setattr(_gpu_spec, "HOST_LIB_DIRS", (lib,))
    monkeypatch.setattr(_gpu_spec, "HOST_BIN_DIRS", (bin_,))
    monkeypatch.setattr(_gpu_spec, "_uvm", lambda: [("/dev/nvidia-uvm", 511, 0)])
    config = {"mounts": [], "linux": {"resources": {"memory": {}}},
              "process": {"env": ["PATH=/usr/bin:/bin", "HOME=/root"]}}
    gpu = GpuDevice(1, 3, "GPU-b", H100_NAME, 81559)
    _gpu_spec.add_gpus(config, [gpu])
    paths = [d["path"] for d in config["linux"]["devices"]]
    assert paths == ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia3"]  # minor, not index
    rules = config["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r.get("major"), r.get("minor")) for r in rules[1:]}
    assert allowed == {(1, 3), (1, 9), (195, 255), (511, 0), (195, 3)}
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert mounts["/usr/local/nvidia/lib64/libcuda.so.1"]["source"] == f"{lib}/libcuda.so.550.90.07"
    assert "/usr/local/nvidia/lib64/libcuda.so" in mounts
    assert "/usr/local/nvidia/lib64/libnvidia-gpucomp.so.550.90.07" in mounts
    assert mounts["/usr/local/nvidia/bin/nvidia-smi"]["source"] == f"{bin_}/nvidia-smi"
    assert all("ro" in m["options"] for m in config["mounts"])
    env = dict(e.split("=", 1) for e in config["process"]["env"])
    assert env["PATH"] == "/usr/local/nvidia/bin:/usr/bin:/bin"
    assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-b"
    assert _gpu_spec.parent_allow()[-2:] == ("c 195:* rw", "c 511:* rw")


def _fake_runsc(tmp_path, versions: str, rc: int = 0) -> str:
    path = tmp_path / "runsc"
    path.write_text(f"#!/bin/sh\nprintf '{versions}'\nexit {rc}\n")
    path.chmod(0o755)
    return str(path)


async def test_refusals_say_why(tmp_path, monkeypatch):
    ctl = tmp_path / "nvidiactl"
    monkeypatch.setattr(_gpu_spec, "CTL", str(ctl))
    runsc = _fake_runsc(tmp_path, "550.54.15\\n550.90.07\\n")
    assert "no NVIDIA GPU" in await _gpu_spec.gpu_unavailable(True, runsc)
    ctl.write_text("")
    assert "no --nvproxy" in await _gpu_spec.gpu_unavailable(False, runsc)
    monkeypatch.setattr(_gpu_spec, "driver_version", lambda: None)
    assert "not loaded" in await _gpu_spec.gpu_unavailable(True, runsc)
    monkeypatch.setattr(_gpu_spec, "driver_version", lambda: "560.35.03")
    why = await _gpu_spec.gpu_unavailable(True, runsc)
    assert "does not support driver 560.35.03" in why and "550.90.07" in why
    monkeypatch.setattr(_gpu_spec, "driver_version", lambda: "550.90.07")
    assert await _gpu_spec.gpu_unavailable(True, runsc) is None
    # a runsc that cannot list its drivers: not refused here (runsc checks at boot)
    assert await _gpu_spec.gpu_unavailable(True, _fake_runsc(tmp_path, "", 2)) is None


def test_doctor_reports_the_gpus_and_why_gpu_sandboxes_are_refused(monkeypatch):
    """`sbx doctor`'s GPU section on a fake GPU host: the inventory, MIG, nvproxy's answer
    and the driver files."""
    import runtimes
    import runtimes.gvisor as gv
    from runtimes.gvisor import Features
    from sandbox_service.cli import _doctor

    monkeypatch.setattr(_doctor, "_has_gpu", lambda: True)
    monkeypatch.setattr(runtimes, "host_inventory", mixed)

    async def feats(binary):
        return Features(version="runsc version 0.0~20240729.0", flags=frozenset({"nvproxy"}))

    async def refused(has_nvproxy, binary):
        assert has_nvproxy
        return "this runsc's nvproxy does not support driver 580.159.04"
    monkeypatch.setattr(gv, "detect_features", feats)
    monkeypatch.setattr(gv, "gpu_unavailable", refused)
    monkeypatch.setattr(gv, "gpu_driver_mounts",
                        lambda: [("/x/libcuda.so.550", "/usr/local/nvidia/lib64/libcuda.so.1")])
    checks = {c.name: c for c in _doctor._gpu_checks()}
    assert checks["GPUs"].status == "OK" and "NVIDIA H100" in checks["GPUs"].detail
    assert "driver 550.90.07" in checks["GPUs"].detail
    assert checks["GPU MIG"].status == "WARN"
    assert checks["GPU sandboxes"].status == "WARN" and "580.159.04" in checks["GPU sandboxes"].detail
    assert checks["GPU driver files"].status == "WARN"
    assert "nvidia-smi" in checks["GPU driver files"].detail

    async def served(has_nvproxy, binary):
        return None
    monkeypatch.setattr(gv, "gpu_unavailable", served)
    assert {c.name: c for c in _doctor._gpu_checks()}["GPU sandboxes"].status == "OK"
