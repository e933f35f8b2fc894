"""Units of the functions service that need no server: the in-container API relay's
checks, option overrides, retry delays, and the autoscaler's arithmetic."""

from __future__ import annotations

import asyncio
import json

import pytest

from sandbox_service.server.services._fn_pool import Pool
from sandbox_service.server.services._functions import FunctionService, _override
from sandbox_service.wire import CallCreate, FunctionSpec, RetryPolicy

pytestmark = pytest.mark.fast


def _svc() -> FunctionService:
    svc = FunctionService.__new__(FunctionService)
    seen = []

    async def relay(who, method, path, ctype, body):
        seen.append((who, method, path))
        return 200, "application/json", b"{}"

    async def relay_ws(who, path, inbox, emit):
        seen.append((who, "WEBSOCKET", path))
        await emit({"t": "ws_opened"}, b"")

    svc.relay = relay
    svc.relay_ws = relay_ws
    svc.seen = seen
    svc.default_max_containers = 8
    return svc


def _fn(**spec) -> dict:
    base = FunctionSpec(name="f", module="m", qualname="f").model_dump()
    return {"function_id": "fu-x", "app_id": "ap-x", "owner": "alice", "name": "f",
            "spec": {**base, **spec}}


@pytest.mark.parametrize("path", ["/v1/../mcp", "/v1/functions/../../health", "/mcp",
                                  "/v1/%2e%2e/x", "health", "/v1/./calls"])
def test_relay_refuses_paths_outside_the_api(path):
    svc = _svc()
    status, _, body = asyncio.run(svc.relay_api(_fn(), {"path": path, "method": "GET"}, b""))
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_request"
    assert svc.seen == []


def test_relay_runs_as_the_containers_app_scoped_owner():
    svc = _svc()
    status, _, _ = asyncio.run(svc.relay_api(
        _fn(), {"path": "/v1/functions/fu-y/calls?x=1", "method": "POST"}, b"{}"))
    assert status == 200
    who, method, path = svc.seen[0]
    assert (who.name, who.scope, who.target) == ("alice", "app", "ap-x")
    assert (method, path) == ("POST", "/v1/functions/fu-y/calls?x=1")


def test_restrict_modal_access_refuses_everything():
    svc = _svc()
    status, _, body = asyncio.run(svc.relay_api(
        _fn(restrict_modal_access=True), {"path": "/v1/info", "method": "GET"}, b""))
    assert status == 403 and "restrict_modal_access" in json.loads(body)["error"]["message"]
    assert svc.seen == []


def _stream(svc, fn, path):
    sent = []

    async def emit(frame, data):
        sent.append((frame, data))
    asyncio.run(svc.relay_stream(fn, path, asyncio.Queue(), emit))
    return sent


def test_relayed_streams_get_the_same_checks():
    svc = _svc()
    [(frame, body)] = _stream(svc, _fn(restrict_modal_access=True), "/v1/sandboxes/x/exec/stream")
    assert frame == {"t": "ws_refused", "status": 403}
    assert "restrict_modal_access" in json.loads(body)["error"]["message"]
    [(frame, body)] = _stream(svc, _fn(), "/v1/../mcp")
    assert frame["t"] == "ws_refused" and frame["status"] == 400
    assert svc.seen == []
    assert _stream(svc, _fn(), "/v1/sandboxes/x/exec/stream") == [({"t": "ws_opened"}, b"")]
    who, method, path = svc.seen[0]
    assert (who.name, who.scope, who.target, method) == ("alice", "app", "ap-x", "WEBSOCKET")


def test_overrides_replace_fields_but_add_env_and_secrets():
    spec = _fn(env={"A": "1"}, secret_names=["s1"], cpu=1.0)["spec"]
    out = _override(spec, {"env": {"B": "2"}, "secret_names": ["s2", "s1"], "cpu": 2.0})
    assert out["env"] == {"A": "1", "B": "2"} and out["secret_names"] == ["s1", "s2"]
    assert out["cpu"] == 2.0
    with pytest.raises(ValueError, match="cannot override"):
        CallCreate(overrides={"image": "im-x"})


def test_retry_delays_follow_modal():
    p = RetryPolicy(max_retries=3, backoff_coefficient=2.0, initial_delay_s=1.0, max_delay_s=5)
    assert [p.delay_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=11)


def test_autoscaler_arithmetic():
    async def go():
        svc = _svc()
        pool = Pool(svc, _fn(max_inputs=4), None)
        assert pool.desired() == 0
        pool.queue.extend([object()] * 9)  # type: ignore[list-item]
        assert pool.desired() == 3  # ceil(9 / 4)
        pool.spec["buffer_containers"] = 1
        assert pool.desired() == 4
        pool.spec["max_containers"] = 2
        assert pool.desired() == 2
        pool.spec.update(max_containers=None, buffer_containers=0, max_inputs=1)
        pool.queue.extend([object()] * 20)  # type: ignore[list-item]
        assert pool.desired() == 8  # the server's default cap
        pool.queue.clear()
        pool.spec["min_containers"] = 2
        assert pool.desired() == 2
        pool.draining = True
        assert pool.desired() == 0
    asyncio.run(go())


def test_image_imports_is_lenient_only_outside_a_container():
    import sandbox_service as modal
    from sandbox_service import _client

    image = modal.Image.debian_slim()
    with image.imports():
        import module_that_is_only_in_the_image  # noqa: F401
    _client.set_container_channel(object())
    try:
        with pytest.raises(ImportError):
            with image.imports():
                import module_that_is_only_in_the_image  # noqa: F401,F811
    finally:
        _client._CHANNEL.clear()
    with pytest.raises(ValueError, match="module level in your app's file"):
        image.run_function(print)
