"""The smaller findings of the independent hostile run (issue 10): private files in
SBX_HOME, an OpenAPI schema that states the limits the code enforces, 405 with Allow,
no traceback for a client's invalid UTF-8, tag keys with colons, strict port segments,
and a files-API read of a device refused at once."""

from __future__ import annotations

import base64
import os
import socket
import stat
import time

import httpx
import pytest
from rawws import _frame

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(120)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_sbx_home_and_its_files_are_private(server, sandbox):
    sandbox.exec("true").wait()
    assert _mode(server.home) == 0o700
    for name in ("state.db", "state.db-wal", "state.db-shm", "keys.db", "audit.db", "token"):
        path = os.path.join(server.home, name)
        if os.path.exists(path):
            assert _mode(path) & 0o077 == 0, (name, oct(_mode(path)))
    box = os.path.join(server.home, "runtime", "sandboxes", sandbox.object_id)
    for name in ("meta.json", "runsc.log", "bundle/config.json"):
        assert _mode(os.path.join(box, name)) & 0o077 == 0, name
    layers = os.path.join(server.home, "images", "layers")
    for key in os.listdir(layers) if os.path.isdir(layers) else ():
        meta = os.path.join(layers, key, "layer.json")
        if os.path.exists(meta):
            assert _mode(meta) & 0o077 == 0, meta


def test_the_schema_states_the_enforced_limits(server):
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    files = spec["paths"]["/v1/sandboxes/{sandbox_id}/files"]["get"]
    path = next(p for p in files["parameters"] if p["name"] == "path")["schema"]
    assert path["minLength"] == 1 and path["pattern"] == "^/" and path["maxLength"] == 4096
    proxy = spec["paths"]["/v1/sandboxes/{sandbox_id}/ports/{port}/{path}"]["get"]
    port = next(p for p in proxy["parameters"] if p["name"] == "port")["schema"]
    assert port["pattern"] == r"^[1-9][0-9]{0,4}$"
    env = spec["components"]["schemas"]["ExecRequest"]["properties"]["env"]
    assert env["propertyNames"]["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    create = spec["paths"]["/v1/sandboxes"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "429", "503"} <= set(create)
    assert "422" not in create  # validation errors are 400s here
    assert create["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")


def test_405_names_the_allowed_methods(api):
    r = api.delete("/v1/info")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_a_port_segment_is_digits_only(api, server):
    sb = sbx.Sandbox.create(encrypted_ports=[8000], timeout=60)
    try:
        for bad in ("8000.0", "08000", "0", "65536", "+8000", "８０００"):
            r = api.get(f"/v1/sandboxes/{sb.object_id}/ports/{bad}/")
            assert r.status_code in (400, 404), (bad, r.status_code)
            if r.status_code == 400:
                assert "not a TCP port" in r.json()["error"]["message"]
        r = api.get(f"/v1/sandboxes/{sb.object_id}/ports/8000.0/x")
        assert r.status_code == 400  # accepted as 8000 before
    finally:
        sb.terminate()


def test_tag_keys_with_colons_filter(server):
    sb = sbx.Sandbox.create(tags={"team:infra": "a:b", "plain": "x"}, timeout=60)
    try:
        found = [s.object_id for s in sbx.Sandbox.list(tags={"team:infra": "a:b"})]
        assert sb.object_id in found
        assert sb.object_id not in [s.object_id for s in sbx.Sandbox.list(tags={"team:infra": "a"})]
        assert sb.object_id in [s.object_id for s in sbx.Sandbox.list(tags={"plain": "x"})]
    finally:
        sb.terminate()


def test_reading_a_device_is_refused_at_once(sandbox):
    t0 = time.monotonic()
    with pytest.raises(sbx.InvalidRequestError, match="not a regular file"):
        sandbox.filesystem.read_bytes("/dev/zero")
    with pytest.raises(sbx.InvalidRequestError, match="not a regular file"):
        sandbox.exec("mkfifo", "/tmp/fifo").wait()
        sandbox.filesystem.read_bytes("/tmp/fifo")  # never waits for a writer
    assert time.monotonic() - t0 < 10


def test_invalid_utf8_in_a_ws_text_frame_is_not_an_error_traceback(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/sandboxes/sb-{'0' * 20}/exec/stream HTTP/1.1\r\nHost: x\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer {server.token}\r\n\r\n").encode())
    assert s.recv(12) == b"HTTP/1.1 101"
    s.sendall(_frame(b"\xff\xfe{bad"))
    got = b""
    s.settimeout(5)
    try:
        while b"\x88" not in got:  # the close frame (1007)
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    time.sleep(0.5)
    tail = server.tail(20000)
    assert "Invalid UTF-8 sequence received from client" not in tail
    assert "sent invalid UTF-8" in tail
