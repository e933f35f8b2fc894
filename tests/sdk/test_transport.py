"""The SDK on an injected transport (httpx.MockTransport): error mapping, messages and
request shapes without a server, root or network."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import sandbox_service as sbx
from sandbox_service.aio import AsyncSandbox, Client
from sandbox_service.wire import ERROR_CODES, SandboxInfo

pytestmark = pytest.mark.fast

INFO = {"sandbox_id": "sb-aaaaaaaaaaaaaaaaaaaa", "state": "running", "image": "debian_slim",
        "created_at": 1.0, "timeout_s": 300.0, "memory_mib": 1024}


def run(coro):
    return asyncio.run(coro)


async def _call(handler, fn, token="t"):
    client = Client("http://sbx.test", token, transport=httpx.MockTransport(handler))
    try:
        return await fn(client)
    finally:
        await client.close()


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_error_code_maps_back_to_its_class(code):
    cls = ERROR_CODES[code]

    def handler(request):
        return httpx.Response(cls.http_status, json={"error": {
            "code": code, "message": "why and what to do", "details": {"k": 1}}})

    with pytest.raises(cls) as info:
        run(_call(handler, lambda c: AsyncSandbox.from_id(INFO["sandbox_id"], client=c)))
    assert info.value.code == code and info.value.message == "why and what to do"
    assert info.value.details == {"k": 1}


def test_unknown_code_and_bodies_without_an_error_stay_typed():
    def unknown(request):
        return httpx.Response(418, json={"error": {"code": "teapot", "message": "short"}})

    with pytest.raises(sbx.SandboxError) as info:
        run(_call(unknown, lambda c: AsyncSandbox.from_id(INFO["sandbox_id"], client=c)))
    assert type(info.value) is sbx.SandboxError and info.value.code == "teapot"

    def html(request):
        return httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(sbx.SandboxError, match="HTTP 502 without an error body"):
        run(_call(html, lambda c: AsyncSandbox.from_id(INFO["sandbox_id"], client=c)))


def test_401_without_a_token_says_where_tokens_come_from():
    def handler(request):
        assert "authorization" not in request.headers
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}})

    with pytest.raises(sbx.AuthenticationError, match="set SBX_TOKEN"):
        run(_call(handler, lambda c: AsyncSandbox.from_id(INFO["sandbox_id"], client=c),
                  token=""))


def test_unreachable_server_is_typed_and_says_what_to_do():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(sbx.ServerUnreachableError, match="sbx serve"):
        run(_call(handler, lambda c: AsyncSandbox.from_id(INFO["sandbox_id"], client=c)))


def test_requests_carry_the_token_and_the_wire_shapes():
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path.endswith("/exec"):
            body = json.loads(request.content)
            assert body["argv"] == ["echo", "hi"] and body["timeout_s"] == 5
            return httpx.Response(200, json={"exit_code": 0, "stdout": "hi\n", "stderr": "",
                                             "duration_ms": 1.0})
        return httpx.Response(200, json=INFO)

    async def go(c):
        sb = await AsyncSandbox.from_id(INFO["sandbox_id"], client=c)
        return await sb.exec_output("echo", "hi", timeout=5)

    out = run(_call(handler, go))
    assert out["stdout"] == "hi\n"
    assert all(r.headers["authorization"] == "Bearer t" for r in seen)


def test_bad_arguments_fail_before_any_request():
    def handler(request):
        raise AssertionError("no request may be sent")

    async def go(c):
        sb = AsyncSandbox(c, SandboxInfo(**INFO))
        return await sb.exec_output("true", timeout=-1)

    with pytest.raises(sbx.InvalidRequestError, match="timeout_s"):
        run(_call(handler, go))
