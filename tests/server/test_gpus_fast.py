"""GPUs through the real app on the fake runtime with a fake NVML (create_app(gpus=...)):
the API's grammar and typed refusals, exclusive allocation, release on every way a sandbox
ends, holdings across a restart, GPU-seconds per principal, and the SDK's `gpu=`. No GPU
needed: `make test-fast`."""

from __future__ import annotations

import time

import httpx
import pytest

from runtimes import GpuDevice

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]

H100 = "NVIDIA H100 80GB HBM3"


class FakeNvml:
    def __init__(self, devices):
        self._devices = devices

    def devices(self):
        return list(self._devices)

    def driver_version(self):
        return "550.90.07"


def two_h100_one_l4() -> FakeNvml:
    return FakeNvml([GpuDevice(0, 0, "GPU-aaa", H100, 81559),
                     GpuDevice(1, 1, "GPU-bbb", H100, 81559),
                     GpuDevice(2, 2, "GPU-ccc", "NVIDIA L4", 23034)])


@pytest.fixture
def gpu_server(make_fake_server):
    return make_fake_server(gpus=two_h100_one_l4())


def _err(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]["code"] == code, r.text
    return r.json()["error"]["message"]


def _user(srv, api, who: str) -> httpx.Client:
    r = api.post("/v1/tokens", json={"scope": "user", "principal": who})
    assert r.status_code == 201, r.text
    return srv.api(r.json()["token"])


def test_exclusive_gpus_refusals_and_release(gpu_server):
    srv = gpu_server
    with srv.api() as api, _user(srv, api, "alice") as alice, _user(srv, api, "bob") as bob:
        a = alice.post("/v1/sandboxes", json={"gpu": "h100"})
        assert a.status_code == 201, a.text
        assert a.json()["gpus"][0].startswith(H100 + " GPU-")
        b = bob.post("/v1/sandboxes", json={"gpu": "H100"}).json()
        held = {a.json()["gpus"][0], b["gpus"][0]}
        assert len(held) == 2  # two sandboxes, two different GPUs
        # the runtime got exactly the GPU the record names
        spec = srv.runtime.created[-1]
        assert [f"{g.name} {g.uuid}" for g in spec.gpus] == b["gpus"]
        msg = _err(alice.post("/v1/sandboxes", json={"gpu": "H100"}), 503, "gpu_busy")
        assert "in use" in msg and "retry" in msg
        msg = _err(alice.post("/v1/sandboxes", json={"gpu": "H100:3"}), 503, "gpu_unavailable")
        assert "no GPU that fits" in msg and "NVIDIA L4" in msg
        _err(alice.post("/v1/sandboxes", json={"gpu": "V100"}), 400, "invalid_request")
        _err(alice.post("/v1/sandboxes", json={"gpu": "H100:0"}), 400, "invalid_request")
        # a list falls back in order
        c = alice.post("/v1/sandboxes", json={"gpu": ["H100", "L4"]}).json()
        assert c["gpus"][0].startswith("NVIDIA L4")
        # what each principal sees
        mine = alice.get("/v1/gpus").json()
        holders = {g["uuid"]: g["holder"] for g in mine["gpus"]}
        assert sorted(h for h in holders.values() if h) == sorted(
            [a.json()["sandbox_id"], c["sandbox_id"], "another principal"])
        assert set(mine["gpu_seconds"]) == {"alice"} and mine["unavailable"] is None
        assert set(api.get("/v1/gpus").json()["gpu_seconds"]) == {"alice", "bob"}
        # terminate frees the GPU at once
        assert bob.delete(f"/v1/sandboxes/{b['sandbox_id']}").status_code == 200
        d = alice.post("/v1/sandboxes", json={"gpu": "H100"})
        assert d.status_code == 201 and d.json()["gpus"] == b["gpus"]
        # a sandbox that dies on its own frees its GPU too
        srv.runtime.kill(d.json()["sandbox_id"])
        deadline = time.monotonic() + 10
        while alice.post("/v1/sandboxes", json={"gpu": "H100", "name": "again"}).status_code != 201:
            assert time.monotonic() < deadline, "the dead sandbox kept its GPU"
            time.sleep(0.05)
        time.sleep(0.05)
        used = api.get("/v1/gpus").json()["gpu_seconds"]
        assert used["bob"] > 0 and used["alice"] > used["bob"] * 0  # counted, per principal


def test_a_failed_boot_gives_the_gpu_back(gpu_server):
    with gpu_server.api() as api:
        gpu_server.runtime.fail_next_create = "boom"
        _err(api.post("/v1/sandboxes", json={"gpu": "L4"}), 503, "runtime_unavailable")
        assert api.post("/v1/sandboxes", json={"gpu": "L4"}).status_code == 201


def test_holdings_survive_a_restart(gpu_server):
    with gpu_server.api() as api:
        sid = api.post("/v1/sandboxes", json={"gpu": "H100:2"}).json()["sandbox_id"]
    gpu_server.restart()
    with gpu_server.api() as api:
        assert api.get(f"/v1/sandboxes/{sid}").json()["state"] == "running"
        _err(api.post("/v1/sandboxes", json={"gpu": "H100"}), 503, "gpu_busy")
    gpu_server.restart(fresh_runtime=True)  # the host rebooted: the sandbox is gone
    with gpu_server.api() as api:
        assert api.get(f"/v1/sandboxes/{sid}").json()["state"] == "lost"
        assert api.post("/v1/sandboxes", json={"gpu": "H100:2"}).status_code == 201


def test_no_gpu_here_is_a_typed_refusal(fake_server):
    """The fake runtime on this host's own inventory (no NVIDIA driver in CI)."""
    with fake_server.api() as api:
        info = api.get("/v1/gpus").json()
        if info["gpus"]:
            pytest.skip("this host has GPUs")
        assert info["unavailable"]
        msg = _err(api.post("/v1/sandboxes", json={"gpu": "any"}), 503, "gpu_unavailable")
        assert "Leave gpu unset" in msg and fake_server.runtime.created == []


def test_the_sdk_takes_modal_gpu_strings(make_fake_server, monkeypatch):
    import sandbox_service as sbx

    srv = make_fake_server(gpus=two_h100_one_l4())
    monkeypatch.setenv("SBX_URL", srv.url)
    monkeypatch.setenv("SBX_TOKEN", srv.token)
    sb = sbx.Sandbox.create(gpu="L4")
    assert srv.runtime.created[-1].gpus[0].uuid == "GPU-ccc"
    with pytest.raises(sbx.GpuBusyError, match="in use"):
        sbx.Sandbox.create(gpu="L4")
    with pytest.raises(sbx.GpuUnavailableError, match="no GPU that fits"):
        sbx.Sandbox.create(gpu="B200")
    with pytest.raises(sbx.InvalidRequestError, match="lists of fallbacks are for functions"):
        sbx.Sandbox.create(gpu=["H100", "L4"])
    with pytest.raises(sbx.InvalidRequestError, match="known models"):
        sbx.Sandbox.create(gpu="RTX4090")
    sb.terminate()
    sbx.Sandbox.create(gpu="L4").terminate()
