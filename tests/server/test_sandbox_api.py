"""The REST and WebSocket API directly (httpx, websockets): auth, typed 4xx errors for bad
input (never 500, never a hang), the non-streaming exec route and the logs route."""

from __future__ import annotations

import json
import re

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)

BAD = "sb-" + "z" * 20


def _err(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


@pytest.fixture
def live(api):
    r = api.post("/v1/sandboxes", json={"timeout_s": 300})
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    yield sid
    api.delete(f"/v1/sandboxes/{sid}")


# ---- auth --------------------------------------------------------------------------------
def test_health_without_token(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200
    assert r.json() == {"ok": True}


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/sandboxes"), ("POST", "/v1/sandboxes"), ("GET", "/v1/info"),
    ("GET", f"/v1/sandboxes/{BAD}"), ("DELETE", f"/v1/sandboxes/{BAD}"),
    ("POST", f"/v1/sandboxes/{BAD}/exec"), ("GET", f"/v1/sandboxes/{BAD}/files"),
    ("POST", "/v1/apps/lookup"), ("GET", "/v1/images"),
])
def test_no_token_401(server, method, path):
    r = httpx.request(method, server.url + path, json={})
    err = _err(r, 401, "unauthorized")
    assert "token" in err["message"]
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Bearer", "Basic abc", "token",
                                    "Bearer sbx_" + "0" * 40])
def test_wrong_token_401(server, header):
    r = httpx.get(server.url + "/v1/sandboxes", headers={"Authorization": header})
    _err(r, 401, "unauthorized")


def test_right_token_lowercase_scheme(server):
    r = httpx.get(server.url + "/v1/sandboxes", headers={"Authorization": f"bearer {server.token}"})
    assert r.status_code == 200


def test_no_token_cannot_create(server, api):
    before = len(api.get("/v1/sandboxes").json()["sandboxes"])
    r = httpx.post(server.url + "/v1/sandboxes", json={})
    _err(r, 401)
    assert len(api.get("/v1/sandboxes").json()["sandboxes"]) == before


def test_token_file_mode(server):
    import os
    import stat

    st = os.stat(os.path.join(server.home, "token"))
    assert stat.S_IMODE(st.st_mode) == 0o600


def _ws_first_frame(url: str, headers: dict | None = None, send: str | None = None) -> dict:
    from websockets.sync.client import connect

    with connect(url, additional_headers=headers or {}, open_timeout=10) as ws:
        if send is not None:
            try:
                ws.send(send)
            except Exception:
                pass
        return json.loads(ws.recv(timeout=10))


def test_ws_exec_without_token_gets_error_frame(server, live):
    url = server.url.replace("http", "ws", 1) + f"/v1/sandboxes/{live}/exec/stream"
    frame = _ws_first_frame(url, send=json.dumps({"argv": ["touch", "/tmp/pwned"]}))
    assert frame["type"] == "error"
    assert frame["code"] == "unauthorized"


def test_ws_exec_wrong_token_does_not_run(server, api, live):
    url = server.url.replace("http", "ws", 1) + f"/v1/sandboxes/{live}/exec/stream"
    frame = _ws_first_frame(url, headers={"Authorization": "Bearer nope"},
                            send=json.dumps({"argv": ["touch", "/tmp/pwned"]}))
    assert (frame["type"], frame["code"]) == ("error", "unauthorized")
    r = api.get(f"/v1/sandboxes/{live}/files/stat", params={"path": "/tmp/pwned"})
    assert r.status_code == 404


def test_ws_exec_bad_first_frame(server, live):
    url = server.url.replace("http", "ws", 1) + f"/v1/sandboxes/{live}/exec/stream"
    auth = {"Authorization": f"Bearer {server.token}"}
    frame = _ws_first_frame(url, headers=auth, send="{not json")
    assert (frame["type"], frame["code"]) == ("error", "invalid_request")
    frame = _ws_first_frame(url, headers=auth, send=json.dumps({"argv": []}))
    assert (frame["type"], frame["code"]) == ("error", "invalid_request")
    frame = _ws_first_frame(url, headers=auth, send=json.dumps({"argv": ["true"], "bogus": 1}))
    assert (frame["type"], frame["code"]) == ("error", "invalid_request")


def test_ws_exec_unknown_sandbox(server):
    url = server.url.replace("http", "ws", 1) + f"/v1/sandboxes/{BAD}/exec/stream"
    frame = _ws_first_frame(url, headers={"Authorization": f"Bearer {server.token}"},
                            send=json.dumps({"argv": ["true"]}))
    assert (frame["type"], frame["code"]) == ("error", "not_found")


def test_ws_exec_raw_protocol(server, live):
    from websockets.sync.client import connect

    url = server.url.replace("http", "ws", 1) + f"/v1/sandboxes/{live}/exec/stream"
    with connect(url, additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
        ws.send(json.dumps({"type": "start", "argv": ["sh", "-c", "cat; echo err >&2; exit 6"]}))
        started = json.loads(ws.recv(timeout=10))
        assert started["type"] == "started"
        assert started["exec_id"].startswith("ex-")
        ws.send(b"\x00" + b"raw-stdin")
        ws.send(json.dumps({"type": "eof"}))
        out, err, exit_ = b"", b"", None
        while exit_ is None:
            msg = ws.recv(timeout=10)
            if isinstance(msg, bytes):
                if msg[0] == 1:
                    out += msg[1:]
                elif msg[0] == 2:
                    err += msg[1:]
            else:
                frame = json.loads(msg)
                if frame["type"] == "exit":
                    exit_ = frame
        assert out == b"raw-stdin"
        assert err == b"err\n"
        assert exit_["exit_code"] == 6
        assert exit_["timed_out"] is False


# ---- typed 4xx for bad input --------------------------------------------------------------
def test_unknown_sandbox_404(api):
    for method, path in (("GET", f"/v1/sandboxes/{BAD}"), ("DELETE", f"/v1/sandboxes/{BAD}"),
                         ("GET", "/v1/sandboxes/not-an-id"),
                         ("POST", f"/v1/sandboxes/{BAD}/wait"),
                         ("GET", f"/v1/sandboxes/{BAD}/logs")):
        _err(api.request(method, path), 404, "not_found")
    _err(api.post(f"/v1/sandboxes/{BAD}/exec", json={"argv": ["true"]}), 404, "not_found")
    _err(api.get(f"/v1/sandboxes/{BAD}/files", params={"path": "/etc/passwd"}), 404, "not_found")
    _err(api.get(f"/v1/sandboxes/{BAD}/files/list", params={"path": "/"}), 404, "not_found")
    _err(api.put(f"/v1/sandboxes/{BAD}/files", params={"path": "/tmp/x"}, content=b"x"), 404)


def test_unknown_route_404(api):
    _err(api.get("/v1/nope"), 404)


@pytest.mark.parametrize("body,needle", [
    ({"memory_mib": -1}, "memory"),
    ({"memory_mib": 0}, "memory"),
    ({"memory_mib": 10_000_000}, "memory"),
    ({"memory_mib": "lots"}, "memory"),
    ({"cpu": -1}, "cpu"),
    ({"cpu": 10_000}, "cpu"),
    ({"timeout_s": 0}, "timeout"),
    ({"timeout_s": -5}, "timeout"),
    ({"timeout_s": 10 ** 9}, "timeout"),
    ({"idle_timeout_s": 0}, "idle_timeout"),
    ({"env": {"BAD-NAME": "x"}}, "env"),
    ({"env": {"1X": "x"}}, "env"),
    ({"env": {"X": "a\u0000b"}}, "env"),
    ({"env": {"X": 5}}, "env"),
    ({"workdir": "relative/dir"}, "workdir"),
    ({"workdir": "/a\u0000b"}, "workdir"),
    ({"command": ["echo", "x" * (300 * 1024)]}, "command"),
    ({"command": ["a\u0000b"]}, "command"),
    ({"command": "echo hi"}, "command"),
    ({"name": "has space"}, "name"),
    ({"name": ""}, "name"),
    ({"tags": {"bad key!": "v"}}, "tags"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"cidr_allowlist": ["198.51.100.0/24"]}, "block_network=False"),
    ({"block_network": False, "cidr_allowlist": ["10.0.0.0/8"]}, "always blocked"),
    ({"block_network": False, "cidr_allowlist": ["2001:db8::/32"]}, "IPv6"),
    ({"block_network": False, "cidr_allowlist": ["not-a-cidr"]}, "not a CIDR"),
])
def test_create_bad_input_400(api, body, needle):
    before = {s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]}
    r = api.post("/v1/sandboxes", json=body)
    err = _err(r, 400, "invalid_request")
    assert needle in err["message"], err
    after = {s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]}
    assert after <= before, "a rejected request must not leave a sandbox running"


def test_memory_above_host_400(api):
    with open("/proc/meminfo") as f:
        total_mib = int(f.readline().split()[1]) // 1024
    r = api.post("/v1/sandboxes", json={"memory_mib": total_mib + 1024})
    err = _err(r, 400, "invalid_request")
    assert "memory" in err["message"]


def test_unknown_image_404(api):
    _err(api.post("/v1/sandboxes", json={"image": "im-" + "0" * 20}), 404, "not_found")
    _err(api.post("/v1/sandboxes", json={"image": "no-such-image"}), 404, "not_found")


def test_unknown_app_404(api):
    _err(api.post("/v1/sandboxes", json={"app_id": "ap-" + "0" * 20}), 404, "not_found")


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b"null", b"\xff\xfe", b"123"])
def test_malformed_json_body_400(api, content):
    r = api.post("/v1/sandboxes", content=content, headers={"Content-Type": "application/json"})
    _err(r, 400, "invalid_request")


def test_huge_argv_exec_400(api, live):
    r = api.post(f"/v1/sandboxes/{live}/exec", json={"argv": ["echo", "x" * (257 * 1024)]})
    err = _err(r, 400, "invalid_request")
    assert "argv" in err["message"]


@pytest.mark.parametrize("body", [
    {"argv": []}, {"argv": "echo"}, {"argv": ["true"], "workdir": "tmp"},
    {"argv": ["true"], "env": {"A B": "x"}}, {"argv": ["true"], "timeout_s": -1},
    {"argv": ["true"], "extra": True}, {"argv": ["true"], "pty": True},
    {"argv": ["true"], "max_output_bytes": -1},
])
def test_exec_bad_input_400(api, live, body):
    _err(api.post(f"/v1/sandboxes/{live}/exec", json=body), 400, "invalid_request")


def test_list_bad_tag_filter_400(api):
    _err(api.get("/v1/sandboxes", params={"tag": "no-colon"}), 400, "invalid_request")
    _err(api.get("/v1/sandboxes", params={"limit": 0}), 400, "invalid_request")


def test_wait_bad_timeout_400(api, live):
    _err(api.post(f"/v1/sandboxes/{live}/wait", params={"timeout_s": -1}), 400, "invalid_request")


def test_app_lookup_bad_name_400(api):
    _err(api.post("/v1/apps/lookup", json={"name": "bad name!"}), 400, "invalid_request")
    _err(api.post("/v1/apps/lookup", json={}), 400, "invalid_request")


def test_file_errors_typed(api, live):
    base = f"/v1/sandboxes/{live}/files"
    _err(api.get(base, params={"path": "/nope"}), 404, "file_not_found")
    _err(api.get(base), 400, "invalid_request")  # path is required
    _err(api.get(base, params={"path": "/tmp"}), 400, "file_error")  # a directory
    _err(api.delete(base, params={"path": "/"}), 400, "invalid_request")
    _err(api.put(base, params={"path": "/tmp/x", "mode": "99999"}, content=b"x"), 400)


# ---- non-streaming exec --------------------------------------------------------------------
def test_exec_once_returns_output(api, live):
    r = api.post(f"/v1/sandboxes/{live}/exec",
                 json={"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stdout"] == "out\n"
    assert body["stderr"] == "err\n"
    assert body["exit_code"] == 3
    assert body["timed_out"] is False
    assert body["stdout_truncated"] is False
    assert body["duration_ms"] > 0


def test_exec_once_stdin_env_workdir(api, live):
    r = api.post(f"/v1/sandboxes/{live}/exec",
                 json={"argv": ["sh", "-c", 'cat; printf "|%s|" "$V"; pwd'], "stdin": "in-data",
                       "env": {"V": "vv"}, "workdir": "/tmp"})
    assert r.status_code == 200, r.text
    assert r.json()["stdout"] == "in-data|vv|/tmp\n"


def test_exec_once_timeout(api, live):
    r = api.post(f"/v1/sandboxes/{live}/exec", json={"argv": ["sleep", "30"], "timeout_s": 1})
    assert r.status_code == 200, r.text
    assert r.json()["exit_code"] == 124
    assert r.json()["timed_out"] is True


def test_exec_once_truncates(api, live):
    r = api.post(f"/v1/sandboxes/{live}/exec",
                 json={"argv": ["head", "-c", "100000", "/dev/zero"], "max_output_bytes": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["exit_code"] == 0
    assert len(body["stdout"]) == 1000
    assert body["stdout_truncated"] is True


def test_exec_once_command_not_found(api, live):
    r = api.post(f"/v1/sandboxes/{live}/exec", json={"argv": ["no-such-cmd-abc"]})
    assert r.status_code == 200, r.text
    assert r.json()["exit_code"] == 127


def test_exec_once_spawn_failure_is_reliable(api, live):
    """A command that cannot start must report 127/126 every time, never a spurious
    'sandbox stopped' 409 while the sandbox is in fact running."""
    api.put(f"/v1/sandboxes/{live}/files", params={"path": "/tmp/noexec"}, content=b"echo\n")
    results = []
    for argv in (["no-such-cmd-abc"], ["/tmp/noexec"]) * 8:
        r = api.post(f"/v1/sandboxes/{live}/exec", json={"argv": argv})
        results.append(r.json()["exit_code"] if r.status_code == 200 else r.status_code)
    assert results == [127, 126] * 8
    assert api.get(f"/v1/sandboxes/{live}").json()["state"] == "running"


def test_exec_once_on_terminated_409(api):
    r = api.post("/v1/sandboxes", json={})
    sid = r.json()["sandbox_id"]
    d = api.delete(f"/v1/sandboxes/{sid}")
    assert d.status_code == 200
    assert d.json()["state"] == "terminated"
    assert d.json()["exit_code"] == 137
    _err(api.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["true"]}), 409, "sandbox_terminated")
    _err(api.get(f"/v1/sandboxes/{sid}/files", params={"path": "/etc/passwd"}), 409,
         "sandbox_terminated")
    # terminate again: still fine, same record
    assert api.delete(f"/v1/sandboxes/{sid}").json()["state"] == "terminated"


# ---- other routes --------------------------------------------------------------------------
def test_info(api):
    r = api.get("/v1/info")
    assert r.status_code == 200
    body = r.json()
    assert body["runtime"] == "gvisor"
    assert isinstance(body["sandboxes_running"], int)


def test_list_sandboxes_shape(api, live):
    body = api.get("/v1/sandboxes").json()
    mine = [s for s in body["sandboxes"] if s["sandbox_id"] == live]
    assert len(mine) == 1
    assert mine[0]["state"] == "running"
    assert mine[0]["memory_mib"] == 1024


def test_logs_of_main_command(api):
    r = api.post("/v1/sandboxes", json={"command": ["sh", "-c", "echo o1; echo e1 >&2; exit 2"]})
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    w = api.post(f"/v1/sandboxes/{sid}/wait", params={"timeout_s": 30})
    assert w.json()["state"] == "exited"
    assert w.json()["exit_code"] == 2
    assert api.get(f"/v1/sandboxes/{sid}/logs", params={"stream": "stdout"}).content == b"o1\n"
    assert api.get(f"/v1/sandboxes/{sid}/logs", params={"stream": "stderr"}).content == b"e1\n"
    assert api.get(f"/v1/sandboxes/{sid}/logs",
                   params={"stream": "stdout", "offset": 1}).content == b"1\n"
    _err(api.get(f"/v1/sandboxes/{sid}/logs", params={"stream": "stdin"}), 400)


def test_server_log_has_no_tracebacks(server):
    """None of the bad input above may have reached the catch-all 500 handler."""
    log = server.tail(2_000_000)
    assert "unhandled error" not in log
    # An access-log line of a 500 ("... HTTP/1.1" 500 ...), not any "500" (e.g. "500 ms").
    # (a web endpoint's own 500, e.g. tests/functions/test_web.py's /boom, is the app's)
    bad = [line for line in re.findall(r'.*HTTP/[0-9.]+" 500 .*', log) if '"GET /web/' not in
           line and '"POST /web/' not in line]
    assert not bad, bad[:5]
