"""agent_tools against a real server: the MCP tools through the in-memory client, over
stdio (`sbx mcp` subprocess) and over streamable HTTP at /mcp; auth, ownership between
principals, timeouts, output caps, images, resource links, cleanup."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid

import httpx
import pytest

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from agent_tools import create_mcp_server  # noqa: E402
from agent_tools._mcp import FixedClient  # noqa: E402
from sandbox_service._client import _Client  # noqa: E402
from sandbox_service._sandbox import _AsyncSandbox  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("server")]

# a 1x1 PNG written by the sandboxed program (no matplotlib needed)
PNG_CODE = (
    "import os, zlib, struct\n"
    "def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))\n"
    "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0))"
    " + chunk(b'IDAT', zlib.compress(b'\\x00\\xff\\x00\\x00')) + chunk(b'IEND', b'')\n"
    "open(os.path.join(os.environ['SBX_OUTPUT_DIR'], 'plot.png'), 'wb').write(png)\n"
    "print('drew it')\n")


def http_client(server, token: str | None, mode: str = "auto") -> Client:
    """mode="legacy": the handshake-era protocol with an Mcp-Session-Id; "auto" picks the
    2026-07-28 protocol, where every request stands alone (no session)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(server.url + "/mcp",
                                         http_client=create_mcp_http_client(headers=headers)),
                  mode=mode)


def user_token(server, name: str) -> str:
    with server.api() as api:
        r = api.post("/v1/tokens", json={"scope": "user", "principal": f"{name}-{uuid.uuid4().hex[:6]}"})
        assert r.status_code == 201, r.text
        return r.json()["token"]


def state_of(server, sandbox_id: str) -> str:
    with server.api() as api:
        return api.get(f"/v1/sandboxes/{sandbox_id}").json()["state"]


def wait_ended(server, sandbox_id: str, within_s: float = 60) -> str:
    deadline = time.monotonic() + within_s
    while (state := state_of(server, sandbox_id)) in ("creating", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    return state


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


@contextlib.asynccontextmanager
async def in_memory(server):
    """The MCP server in this process, talked to with the SDK's in-memory client."""
    client = _Client(server.url, server.token)
    mcp_server, host = create_mcp_server(FixedClient(client))
    try:
        async with Client(mcp_server) as c:
            yield c
    finally:
        await host.registry.close_all()
        await client.close()


async def test_run_code_fresh_sandbox_and_nonzero_exit(server):
    async with in_memory(server) as memory:
        r = await memory.call_tool("run_code", {"code": "import sys; print(6*7); sys.exit(3)"})
        assert not r.is_error, text_of(r)
        s = r.structured_content
        assert s["stdout"] == "42\n" and s["exit_code"] == 3 and not s["timed_out"]
        assert "exit_code=3" in text_of(r) and "42" in text_of(r)
        assert wait_ended(server, s["sandbox_id"]) not in ("creating", "running")  # single use
        r = await memory.call_tool("run_code", {"language": "bash", "code": "echo $((2+3)) >&2"})
        assert r.structured_content["stderr"] == "5\n"


async def test_image_output_comes_back_as_image_content(server):
    async with in_memory(server) as memory:
        r = await memory.call_tool("run_code", {"code": PNG_CODE})
        assert not r.is_error, text_of(r)
        images = [c for c in r.content if c.type == "image"]
        assert len(images) == 1 and images[0].mime_type == "image/png"
        assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
        assert r.structured_content["images"][0].endswith("plot.png")


async def test_timeout_is_an_error_result_and_output_is_capped(server):
    async with in_memory(server) as memory:
        r = await memory.call_tool("run_code", {"language": "bash", "code": "echo started; sleep 60",
                                                "timeout_s": 2})
        assert r.is_error and r.structured_content["timed_out"] and r.structured_content["exit_code"] == 124
        assert "timeout" in text_of(r) and "started" in r.structured_content["stdout"]
        r = await memory.call_tool("run_code", {"code": "print('x' * 100000)", "max_output_chars": 1000})
        s = r.structured_content
        assert not r.is_error and s["truncated"] and "[... truncated:" in s["stdout"]
        assert s["stdout"].count("x") == 1000


async def test_bad_arguments_and_unknown_sandbox_are_actionable_errors(server):
    async with in_memory(server) as memory:
        r = await memory.call_tool("run_code", {"code": "print(1)", "timeout_s": 99999})
        assert r.is_error and "timeout_s" in text_of(r)
        r = await memory.call_tool("exec_command", {"sandbox_id": "sb-" + "z" * 20, "command": "true"})
        assert r.is_error and "not_found" in text_of(r) and "create_sandbox" in text_of(r)
        r = await memory.call_tool("run_code", {"language": "node", "code": "console.log(1)"})
        if r.is_error:  # debian_slim has no node: the message says what to do
            assert "no `node`" in text_of(r)
        else:
            assert r.structured_content["stdout"] == "1\n"


async def test_create_sandbox_with_a_network_allowlist(server):
    async with in_memory(server) as memory:
        r = await memory.call_tool("create_sandbox", {"network": "allowlist"})
        assert r.is_error and "domain_allowlist" in text_of(r)
        r = await memory.call_tool("create_sandbox", {"network": "allowlist",
                                                      "domain_allowlist": ["pypi.org"]})
        assert not r.is_error, text_of(r)
        sid = r.structured_content["sandbox_id"]
        try:
            # only the listed name resolves (the service's resolver answers the sandbox)
            r = await memory.call_tool("exec_command", {
                "sandbox_id": sid, "command": "getent hosts example.org || echo NONAME"})
            assert "NONAME" in r.structured_content["stdout"], r.structured_content
        finally:
            await memory.call_tool("terminate_sandbox", {"sandbox_id": sid})


async def test_sandbox_file_tools_and_resource_links(server):
    async with in_memory(server) as memory:
        r = await memory.call_tool("create_sandbox", {"idle_timeout_s": 120})
        assert not r.is_error, text_of(r)
        sid = r.structured_content["sandbox_id"]
        try:
            r = await memory.call_tool("write_file", {"sandbox_id": sid, "path": "/work/a/b.txt",
                                                      "content": "héllo\n"})
            assert r.structured_content["bytes_written"] == len("héllo\n".encode())
            r = await memory.call_tool("read_file", {"sandbox_id": sid, "path": "/work/a/b.txt"})
            assert r.structured_content["content"] == "héllo\n" and not r.structured_content["truncated"]
            r = await memory.call_tool("list_files", {"sandbox_id": sid, "path": "/work/a"})
            assert [e["name"] for e in r.structured_content["entries"]] == ["b.txt"]
            r = await memory.call_tool("exec_command", {"sandbox_id": sid, "workdir": "/work/a",
                                                        "command": "seq 1 50000 > big.txt; wc -l < big.txt"})
            assert r.structured_content["stdout"].strip() == "50000"
            r = await memory.call_tool("read_file", {"sandbox_id": sid, "path": "/work/a/big.txt",
                                                     "max_chars": 1000})
            s = r.structured_content
            assert s["truncated"] and s["resource_uri"] == f"sbx://sandboxes/{sid}/files/work/a/big.txt"
            links = [c for c in r.content if c.type == "resource_link"]
            assert links and str(links[0].uri) == s["resource_uri"]
            whole = await memory.read_resource(s["resource_uri"])
            blob = whole.contents[0]
            data = base64.b64decode(blob.blob) if hasattr(blob, "blob") else blob.text.encode()
            assert data.count(b"\n") == 50000
            r = await memory.call_tool("run_code", {"sandbox_id": sid, "code": "print(open('/work/a/b.txt').read())"})
            assert "héllo" in r.structured_content["stdout"]
            assert state_of(server, sid) == "running"  # a given sandbox is not single-use
        finally:
            r = await memory.call_tool("terminate_sandbox", {"sandbox_id": sid})
        assert not r.is_error and state_of(server, sid) not in ("creating", "running")


async def test_progress_notifications_stream_output(server):
    async with in_memory(server) as memory:
        seen = []

        async def on_progress(progress, total, message):
            seen.append(message)

        r = await memory.call_tool("run_code", {"language": "bash",
                                                "code": "for i in 1 2 3; do echo line$i; sleep 0.2; done"},
                                   progress_callback=on_progress)
        assert not r.is_error
        assert any(m and "line1" in m for m in seen), seen


@pytest.mark.skipif(not hasattr(_AsyncSandbox, "create_context"),
                    reason="the stateful interpreter (Sandbox.create_context) is not on this branch")
async def test_context_keeps_state_between_calls(server):
    async with in_memory(server) as memory:
        r = await memory.call_tool("create_sandbox", {})
        sid = r.structured_content["sandbox_id"]
        try:
            r = await memory.call_tool("create_context", {"sandbox_id": sid})
            assert not r.is_error, text_of(r)
            cid = r.structured_content["context_id"]
            await memory.call_tool("run_in_context", {"sandbox_id": sid, "context_id": cid, "code": "x = 41"})
            r = await memory.call_tool("run_in_context", {"sandbox_id": sid, "context_id": cid, "code": "x + 1"})
            assert r.structured_content["text"] == "42"
            r = await memory.call_tool("run_in_context", {"sandbox_id": sid, "context_id": cid, "code": "1/0"})
            assert not r.is_error and r.structured_content["error"]["name"] == "ZeroDivisionError"
            assert "ZeroDivisionError" in r.structured_content["error"]["traceback"]
            r = await memory.call_tool("run_in_context", {"sandbox_id": sid, "context_id": cid,
                                                          "code": "import time; x = 7; time.sleep(60)",
                                                          "timeout_s": 2})
            assert r.is_error and r.structured_content["timed_out"] and "kept" in text_of(r)
            r = await memory.call_tool("run_in_context", {"sandbox_id": sid, "context_id": cid,
                                                          "code": "print('x is', x)"})
            assert r.structured_content["stdout"] == "x is 7\n", text_of(r)
        finally:
            await memory.call_tool("terminate_sandbox", {"sandbox_id": sid})


# ---- streamable HTTP at /mcp ---------------------------------------------------------------
def test_http_refuses_missing_or_bad_token_with_resource_metadata(server):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = httpx.post(server.url + "/mcp", json=body, headers={
            "Accept": "application/json, text/event-stream", **headers})
        assert r.status_code == 401, r.text
        www = r.headers["www-authenticate"]
        assert www.startswith("Bearer ") and "resource_metadata=" in www
        meta_url = www.split('resource_metadata="')[1].split('"')[0]
        assert meta_url.endswith("/.well-known/oauth-protected-resource/mcp")
    meta = httpx.get(server.url + "/.well-known/oauth-protected-resource/mcp")
    assert meta.status_code == 200 and meta.json()["resource"].endswith("/mcp")


def test_http_refuses_a_foreign_host_header(server):
    r = httpx.post(server.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                   headers={"Host": "evil.example:80", "Authorization": f"Bearer {server.token}",
                            "Accept": "application/json, text/event-stream"})
    assert r.status_code in (400, 403, 421), r.status_code


async def test_http_run_code_and_principals_cannot_share_handles(server):
    alice, bob = user_token(server, "alice"), user_token(server, "bob")
    async with http_client(server, alice, mode="legacy") as a:
        names = {t.name for t in (await a.list_tools()).tools}
        assert {"run_code", "create_sandbox", "exec_command", "read_file", "write_file",
                "list_files", "terminate_sandbox", "create_context", "run_in_context"} <= names
        r = await a.call_tool("run_code", {"code": PNG_CODE})
        assert not r.is_error and r.structured_content["stdout"] == "drew it\n", text_of(r)
        assert any(c.type == "image" for c in r.content)
        r = await a.call_tool("create_sandbox", {})
        sid = r.structured_content["sandbox_id"]
        with server.api() as api:  # created as alice, not as the server's admin
            assert api.get(f"/v1/sandboxes/{sid}").json().get("owner", alice) != "admin"
        async with http_client(server, bob) as b:
            for tool, args in (("exec_command", {"command": "echo hi"}),
                               ("read_file", {"path": "/etc/hostname"}),
                               ("terminate_sandbox", {})):
                r = await b.call_tool(tool, {"sandbox_id": sid, **args})
                assert r.is_error and "not_found" in text_of(r), (tool, text_of(r))
        r = await a.call_tool("exec_command", {"sandbox_id": sid, "command": "echo hi"})
        assert r.structured_content["stdout"] == "hi\n"
    # alice's MCP session ended (the client sent DELETE): what it created is destroyed
    assert wait_ended(server, sid) not in ("creating", "running")


async def test_http_sessionless_protocol_keeps_sandboxes_until_idle(server):
    """2026-07-28 clients have no session: a sandbox outlives one request and is found again
    by the same token, and ends with its idle timeout (or terminate_sandbox)."""
    token = user_token(server, "dora")
    async with http_client(server, token) as c:
        r = await c.call_tool("create_sandbox", {"idle_timeout_s": 30})
        sid = r.structured_content["sandbox_id"]
    async with http_client(server, token) as c:
        r = await c.call_tool("exec_command", {"sandbox_id": sid, "command": "echo again"})
        assert r.structured_content["stdout"] == "again\n", text_of(r)
        r = await c.call_tool("terminate_sandbox", {"sandbox_id": sid})
        assert not r.is_error


async def test_http_sandboxes_end_when_the_token_is_revoked(server):
    with server.api() as api:
        k = api.post("/v1/tokens", json={"scope": "user", "principal": "carol-" + uuid.uuid4().hex[:6]}).json()
    async with http_client(server, k["token"]) as c:
        r = await c.call_tool("create_sandbox", {})
        sid = r.structured_content["sandbox_id"]
        with server.api() as api:
            assert api.delete(f"/v1/tokens/{k['id']}").status_code == 200
        # the reaper (every SBX_MCP_SWEEP_S) finds the token gone and ends the sandbox,
        # while the client is still connected
        assert await asyncio.to_thread(wait_ended, server, sid, 90) not in ("creating", "running")


# ---- stdio: `sbx mcp` ---------------------------------------------------------------------
async def test_stdio_sbx_mcp(server):
    env = {**server.env(), "SBX_TOKEN": server.token, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    params = StdioServerParameters(command=sys.executable, args=["-m", "sandbox_service.cli", "mcp"],
                                   env=env)
    async with Client(params) as c:
        assert "run_code" in {t.name for t in (await c.list_tools()).tools}
        r = await c.call_tool("run_code", {"code": "print('from stdio')"})
        assert r.structured_content["stdout"] == "from stdio\n", text_of(r)
        r = await c.call_tool("create_sandbox", {})
        sid = r.structured_content["sandbox_id"]
        assert state_of(server, sid) == "running"
    assert wait_ended(server, sid) not in ("creating", "running")


# ---- an independent client: the MCP Inspector CLI (npm, TypeScript SDK) --------------------
# 0.15.0 is the newest release that runs on node 20 (0.16+ needs node >= 22.7.5); its CLI
# has no --header option, so it drives `sbx mcp` over stdio and checks that /mcp refuses it
# without a token. .ci/run pre-fetches it (scripts/install-system-deps.sh installs node).
INSPECTOR = "@modelcontextprotocol/inspector@0.15.0"


def inspector(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(["npx", "-y", INSPECTOR, "--cli", *args], capture_output=True,
                         text=True, timeout=240, env=env)
    if out.returncode != 0 and any(s in out.stderr for s in ("ENOTFOUND", "EAI_AGAIN", "E404")):
        pytest.skip("the npm registry is not reachable: " + out.stderr[-300:])
    return out


@pytest.mark.skipif(not shutil.which("npx"), reason="node/npx not installed (scripts/install-system-deps.sh)")
def test_mcp_inspector_cli(server):
    env = {**server.env(), "SBX_TOKEN": server.token, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "sandbox_service.cli", "mcp"]
    out = inspector([*cmd, "--method", "tools/list"], env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"run_code"' in out.stdout and '"outputSchema"' in out.stdout
    out = inspector([*cmd, "--method", "tools/call", "--tool-name", "run_code",
                     "--tool-arg", "code=print(7*6)"], env)
    assert out.returncode == 0 and '"stdout": "42\\n"' in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    out = inspector([server.url + "/mcp", "--transport", "http", "--method", "tools/list"], env)
    assert out.returncode != 0 and "run_code" not in out.stdout


async def test_http_client_cache_never_closes_a_client_in_use():
    """The per-token client cache of the HTTP mount: a principal minting many tokens
    evicts only its own clients, and a client evicted while a call uses it is closed only
    when that call ends."""
    from agent_tools._http import MAX_CLIENTS, MAX_CLIENTS_PER_PRINCIPAL, CallerClients

    async def settle():
        for _ in range(5):
            await asyncio.sleep(0)

    clients = CallerClients("http://127.0.0.1:9", lambda token: None)
    try:
        victim = clients.acquire("victim-token", "victim")  # a call in flight
        for i in range(MAX_CLIENTS + 50):                   # another principal churns
            clients.release(clients.acquire(f"churn-{i}", "churner"))
        await settle()
        assert not victim._http.is_closed
        assert clients.acquire("victim-token", "victim") is victim  # still cached
        clients.release(victim)
        assert sum(1 for e in clients._clients.values() if e.owner == "churner") \
            == MAX_CLIENTS_PER_PRINCIPAL

        # many principals push it out of the cache while the call still runs: it stays
        # usable until released, then it is closed
        for i in range(MAX_CLIENTS):
            clients.release(clients.acquire(f"p{i}-token", f"p{i}"))
        await settle()
        assert "victim-token" not in clients._clients
        assert not victim._http.is_closed
        clients.release(victim)
        await settle()
        assert victim._http.is_closed
    finally:
        await clients.close()
