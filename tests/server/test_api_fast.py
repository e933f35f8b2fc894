"""The real app's REST and WebSocket API on the fake runtime (tests/fakes.py): auth,
ownership, lifecycle, exec, files and their typed errors, quotas, a container dying or
running out of memory, restarts. No root or runsc: `make test-fast`."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from security import ResourcePolicy

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]

BAD = "sb-" + "z" * 20


def _err(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def _create(api: httpx.Client, **body) -> dict:
    r = api.post("/v1/sandboxes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _wait_state(api: httpx.Client, sid: str, timeout_s: float = 10) -> dict:
    r = api.post(f"/v1/sandboxes/{sid}/wait", params={"timeout_s": timeout_s})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def api(fake_server):
    with fake_server.api() as c:
        yield c


@pytest.fixture
def box(api) -> str:
    return _create(api)["sandbox_id"]


# ---- auth and ownership ------------------------------------------------------------------
def test_missing_or_wrong_token_is_401_with_www_authenticate(fake_server):
    assert httpx.get(fake_server.url + "/health").json() == {"ok": True}
    for token in ("", "wrong"):
        with fake_server.api(token) as anon:
            r = anon.get("/v1/sandboxes")
            _err(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"] == "Bearer"
            _err(anon.post("/v1/sandboxes", json={}), 401, "unauthorized")
    assert fake_server.runtime.created == []  # nothing booted for the 401s


def test_a_user_key_sees_only_its_own_sandboxes(fake_server, api):
    keys = {}
    for who in ("alice", "bob"):
        r = api.post("/v1/tokens", json={"scope": "user", "principal": who})
        assert r.status_code == 201, r.text
        keys[who] = r.json()["token"]
    with fake_server.api(keys["alice"]) as a, fake_server.api(keys["bob"]) as b:
        sid = _create(a)["sandbox_id"]
        assert a.get(f"/v1/sandboxes/{sid}").json()["sandbox_id"] == sid
        for path in ("", "/files/list?path=/"):
            mine, none = b.get(f"/v1/sandboxes/{sid}{path}"), b.get(f"/v1/sandboxes/{BAD}{path}")
            assert _err(mine, 404, "not_found")["message"].replace(sid, "X") == \
                _err(none, 404, "not_found")["message"].replace(BAD, "X")
        _err(b.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["true"]}), 404, "not_found")
        _err(b.delete(f"/v1/sandboxes/{sid}"), 404, "not_found")
        assert [s["sandbox_id"] for s in b.get("/v1/sandboxes").json()["sandboxes"]] == []
        assert [s["sandbox_id"] for s in a.get("/v1/sandboxes").json()["sandboxes"]] == [sid]
        assert api.get(f"/v1/sandboxes/{sid}").status_code == 200  # the admin sees all
        # only the admin makes user keys
        _err(a.post("/v1/tokens", json={"scope": "user", "principal": "mallory"}), 403,
             "forbidden")


# ---- lifecycle ---------------------------------------------------------------------------
def test_create_get_list_terminate(fake_server, api):
    info = _create(api, tags={"team": "a"}, memory_mib=256)
    sid = info["sandbox_id"]
    assert sid.startswith("sb-") and len(sid) == 23
    assert (info["state"], info["exit_code"], info["image"]) == ("running", None, "debian_slim")
    assert info["image_id"] == fake_server.images.base.image_id
    assert fake_server.runtime.created[-1].memory_mib == 256
    assert api.get(f"/v1/sandboxes/{sid}").json() == info
    assert [s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]] == [sid]
    done = api.delete(f"/v1/sandboxes/{sid}").json()
    assert (done["state"], done["exit_code"], done["reason"]) == \
        ("terminated", 137, "terminated by request")
    assert sid not in fake_server.runtime.containers  # destroyed
    assert api.get("/v1/sandboxes").json()["sandboxes"] == []
    assert [s["state"] for s in api.get("/v1/sandboxes", params={"all": "true"})
            .json()["sandboxes"]] == ["terminated"]
    assert api.delete(f"/v1/sandboxes/{sid}").json()["state"] == "terminated"  # idempotent
    _err(api.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["true"]}), 409,
         "sandbox_terminated")
    _err(api.get(f"/v1/sandboxes/{BAD}"), 404, "not_found")


def test_tags_filter(api):
    a = _create(api, tags={"team": "a", "k:x": "1"})["sandbox_id"]
    b = _create(api, tags={"team": "b"})["sandbox_id"]

    def ids(**params):
        r = api.get("/v1/sandboxes", params=params)
        assert r.status_code == 200, r.text
        return {s["sandbox_id"] for s in r.json()["sandboxes"]}
    assert ids() == {a, b}
    assert ids(tag="team:a") == {a}
    assert ids(tag="team:c") == set()
    assert ids(tags=json.dumps({"k:x": "1"})) == {a}
    r = api.put(f"/v1/sandboxes/{b}/tags", json={"tags": {"team": "a"}})
    assert r.status_code == 200 and r.json()["tags"] == {"team": "a"}
    assert ids(tag="team:a") == {a, b}
    _err(api.get("/v1/sandboxes", params={"tag": "no-colon"}), 400, "invalid_request")
    _err(api.get("/v1/sandboxes", params={"tags": "[1]"}), 400, "invalid_request")


def test_quota_is_429_and_frees_on_terminate(make_fake_server):
    srv = make_fake_server(policy=ResourcePolicy(max_sandboxes=2))
    with srv.api() as api:
        first = _create(api)["sandbox_id"]
        _create(api)
        err = _err(api.post("/v1/sandboxes", json={}), 429, "quota_exceeded")
        assert "the limit is 2" in err["message"]
        assert len(srv.runtime.containers) == 2
        api.delete(f"/v1/sandboxes/{first}")
        _create(api)


def test_container_dying_finishes_as_failed(fake_server, api, box):
    fake_server.runtime.kill(box)
    info = _wait_state(api, box)
    assert (info["state"], info["exit_code"]) == ("failed", 137)
    assert "stopped on its own" in info["reason"]
    assert box not in fake_server.runtime.containers
    _err(api.get(f"/v1/sandboxes/{box}/files/list", params={"path": "/"}), 409,
         "sandbox_terminated")


def test_container_oom_finishes_as_oom(fake_server, api, box):
    fake_server.runtime.kill(box, oom=True)
    info = _wait_state(api, box)
    assert (info["state"], info["exit_code"]) == ("oom", 137)
    assert "out of memory (limit 1024 MiB)" in info["reason"]


def test_an_oom_kill_inside_a_running_sandbox_ends_it_as_oom(fake_server, api, box):
    """systrap: the kernel may kill one process's stub and leave the sandbox up; the
    documented contract (memory limit -> state oom, exit 137) holds all the same."""
    fake_server.runtime.oom_kill_one(box)
    assert (api.get(f"/v1/sandboxes/{box}").json()["state"]) in ("running", "oom")
    info = _wait_state(api, box)
    assert (info["state"], info["exit_code"]) == ("oom", 137)
    assert box not in fake_server.runtime.containers


def test_a_command_killed_for_memory_is_an_oom_not_a_bare_exit_1(make_fake_server):
    """The command's own exit (non-zero) arrives before the monitor looks: the exec still
    answers sandbox_oom, and the sandbox is ended as oom."""
    srv = make_fake_server(monitor_interval_s=3600)
    with srv.api() as api:
        sid = api.post("/v1/sandboxes", json={}).json()["sandbox_id"]
        ok = api.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["sh", "-c", "exit 1"]})
        assert ok.status_code == 200 and ok.json()["exit_code"] == 1  # no OOM: a plain exit
        srv.runtime.oom_kill_one(sid)
        r = api.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["sh", "-c", "exit 1"]})
        _err(r, 409, "sandbox_oom")
        info = api.get(f"/v1/sandboxes/{sid}").json()
        assert (info["state"], info["exit_code"]) == ("oom", 137)


def test_oom_under_a_running_exec_is_a_typed_409(fake_server, api, box):
    result = {}

    def run():
        result["r"] = api.post(f"/v1/sandboxes/{box}/exec", json={"argv": ["sleep", "30"]})
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 5
    while not fake_server.runtime.containers[box].pgids:
        assert time.monotonic() < deadline, "the exec never started"
        time.sleep(0.01)
    fake_server.runtime.kill(box, oom=True)
    t.join(10)
    _err(result["r"], 409, "sandbox_oom")


def test_an_unresponsive_agent_fails_the_sandbox(fake_server, api, box):
    fake_server.runtime.wedge(box, "its agent is wedged (test)")
    info = _wait_state(api, box)
    assert (info["state"], info["exit_code"], info["reason"]) == \
        ("failed", 137, "its agent is wedged (test)")


def test_sandbox_timeout(api):
    sid = _create(api, timeout_s=0.3)["sandbox_id"]
    info = _wait_state(api, sid)
    assert (info["state"], info["exit_code"]) == ("timeout", 124)


def test_boot_failure_is_503_and_recorded(fake_server, api):
    fake_server.runtime.fail_next_create = "no more loop devices"
    err = _err(api.post("/v1/sandboxes", json={}), 503, "runtime_unavailable")
    assert "no more loop devices" in err["message"]
    recs = api.get("/v1/sandboxes", params={"all": "true"}).json()["sandboxes"]
    assert [(r["state"], r["exit_code"]) for r in recs] == [("failed", None)]
    assert fake_server.runtime.containers == {}


def test_main_command_exit_code_and_logs(api):
    sid = _create(api, command=["sh", "-c", "echo hi; echo oops >&2; exit 7"],
                  workdir="/srv/app")["sandbox_id"]
    info = _wait_state(api, sid)
    assert (info["state"], info["exit_code"], info["has_command"]) == ("exited", 7, True)
    assert api.get(f"/v1/sandboxes/{sid}/logs").content == b"hi\n"
    assert api.get(f"/v1/sandboxes/{sid}/logs", params={"stream": "stderr"}).content == b"oops\n"


def test_main_command_not_found_is_400(fake_server, api):
    err = _err(api.post("/v1/sandboxes", json={"command": ["definitely-not-a-command-xyz"]}),
               400, "invalid_request")
    assert err["message"].startswith("could not start the sandbox's command")
    assert fake_server.runtime.containers == {}


def test_finished_records_survive_a_restart_and_running_ones_reattach(fake_server):
    with fake_server.api() as api:
        done = api.delete(f"/v1/sandboxes/{_create(api, tags={'t': '1'})['sandbox_id']}").json()
        running = _create(api, name="keeper")["sandbox_id"]
    fake_server.restart()  # same home, same runtime: the sandbox is still there
    with fake_server.api() as api:
        assert api.get(f"/v1/sandboxes/{done['sandbox_id']}").json() == done
        assert api.get(f"/v1/sandboxes/{running}").json()["state"] == "running"
        r = api.post(f"/v1/sandboxes/{running}/exec", json={"argv": ["echo", "back"]})
        assert r.json()["stdout"] == "back\n"
    fake_server.restart(fresh_runtime=True)  # the host lost its sandboxes
    with fake_server.api() as api:
        lost = api.get(f"/v1/sandboxes/{running}").json()
        assert (lost["state"], lost["exit_code"], lost["name"]) == ("lost", 137, "keeper")
        assert lost["reason"] == "it stopped while the server was down"
        assert api.get(f"/v1/sandboxes/{done['sandbox_id']}").json() == done


# ---- exec ----------------------------------------------------------------------------------
def test_exec_once_output_and_exit_code(api, box):
    r = api.post(f"/v1/sandboxes/{box}/exec",
                 json={"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["stdout"], body["stderr"], body["exit_code"], body["timed_out"],
            body["signal"], body["stdout_truncated"]) == ("out\n", "err\n", 3, False, None, False)


def test_exec_once_stdin_env_workdir(api, box):
    api.put(f"/v1/sandboxes/{box}/files", params={"path": "/srv/marker"}, content=b"M")
    r = api.post(f"/v1/sandboxes/{box}/exec",
                 json={"argv": ["sh", "-c", 'cat; printf "|%s|" "$V"; cat marker'],
                       "stdin": "in-data", "env": {"V": "vv"}, "workdir": "/srv"})
    assert r.json()["stdout"] == "in-data|vv|M"


def test_exec_once_timeout_is_124(api, box):
    t0 = time.monotonic()
    r = api.post(f"/v1/sandboxes/{box}/exec", json={"argv": ["sleep", "30"], "timeout_s": 0.3})
    assert (r.json()["exit_code"], r.json()["timed_out"]) == (124, True)
    assert time.monotonic() - t0 < 5


def test_exec_once_shell_exit_codes(api, box):
    def run(argv, **kw):
        return api.post(f"/v1/sandboxes/{box}/exec", json={"argv": argv, **kw}).json()
    missing = run(["definitely-not-a-command-xyz"])
    assert missing["exit_code"] == 127 and "definitely-not-a-command-xyz" in missing["stderr"]
    assert run(["true"], workdir="/no/such/dir")["exit_code"] == 126
    killed = run(["sh", "-c", "kill -TERM $$"])
    assert (killed["exit_code"], killed["signal"]) == (143, 15)


def test_exec_once_truncates(api, box):
    r = api.post(f"/v1/sandboxes/{box}/exec",
                 json={"argv": ["sh", "-c", "printf '%0100d' 0"], "max_output_bytes": 10})
    assert (r.json()["stdout"], r.json()["stdout_truncated"]) == ("0" * 10, True)


def test_exec_bad_input_is_400(api, box):
    for body in ({"argv": []}, {"argv": "echo"}, {"argv": ["true"], "workdir": "tmp"},
                 {"argv": ["true"], "pty": True}, {"argv": ["true"], "extra": 1}):
        _err(api.post(f"/v1/sandboxes/{box}/exec", json=body), 400, "invalid_request")


def _ws(fake_server, sid: str, token: str | None = None):
    token = fake_server.token if token is None else token
    return connect(fake_server.ws_url(f"/v1/sandboxes/{sid}/exec/stream"), open_timeout=10,
                   additional_headers={"Authorization": f"Bearer {token}"} if token else {})


def _drain(ws) -> tuple[bytes, bytes, dict]:
    out, err = b"", b""
    while True:
        msg = ws.recv(timeout=10)
        if isinstance(msg, bytes):
            if msg[0] == 1:
                out += msg[1:]
            elif msg[0] == 2:
                err += msg[1:]
        elif json.loads(msg)["type"] == "exit":
            return out, err, json.loads(msg)


def test_exec_websocket_stdin_and_exit(fake_server, box):
    with _ws(fake_server, box) as ws:
        ws.send(json.dumps({"type": "start", "argv": ["sh", "-c", "cat; echo err >&2; exit 6"]}))
        started = json.loads(ws.recv(timeout=10))
        assert started["type"] == "started" and started["exec_id"].startswith("ex-")
        ws.send(b"\x00" + b"raw-stdin")
        ws.send(json.dumps({"type": "eof"}))
        out, err, exit_ = _drain(ws)
    assert (out, err) == (b"raw-stdin", b"err\n")
    assert (exit_["exit_code"], exit_["timed_out"], exit_["signal"]) == (6, False, None)


def test_exec_websocket_signal_and_container_death(fake_server, box):
    with _ws(fake_server, box) as ws:
        ws.send(json.dumps({"argv": ["sleep", "30"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "started"
        ws.send(json.dumps({"type": "signal", "signal": 15}))
        assert _drain(ws)[2]["exit_code"] == 143
    with _ws(fake_server, box) as ws:  # the container dies under the command: killed
        ws.send(json.dumps({"argv": ["sleep", "30"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "started"
        fake_server.runtime.kill(box)
        exit_ = _drain(ws)[2]
        assert (exit_["exit_code"], exit_["signal"]) == (137, 9)


def test_exec_websocket_errors_are_frames(fake_server, box):
    for token, sid, code in (("", box, "unauthorized"), ("nope", box, "unauthorized"),
                             (None, BAD, "not_found")):
        with _ws(fake_server, sid, token) as ws:
            # the server may answer (and close) before it reads the request
            with contextlib.suppress(ConnectionClosed):
                ws.send(json.dumps({"argv": ["touch", "/tmp/pwned"]}))
            frame = json.loads(ws.recv(timeout=10))
        assert (frame["type"], frame["code"]) == ("error", code)
    with _ws(fake_server, box) as ws:
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid_request"
    assert not os.path.exists(os.path.join(fake_server.runtime.containers[box].root, "tmp/pwned"))


# ---- files ---------------------------------------------------------------------------------
def test_files_put_get_stat_list_mkdir_remove(fake_server, api, box):
    base = f"/v1/sandboxes/{box}/files"
    data = bytes(range(256)) * 3
    r = api.put(base, params={"path": "/data/sub/b.bin", "mode": 0o600}, content=data)
    assert r.json() == {"path": "/data/sub/b.bin", "size": 768}
    assert api.get(base, params={"path": "/data/sub/b.bin"}).content == data
    st = api.get(base + "/stat", params={"path": "/data/sub/b.bin"}).json()
    assert (st["name"], st["path"], st["type"], st["size"], st["mode"]) == \
        ("b.bin", "/data/sub/b.bin", "file", 768, 0o600)
    assert api.post(base + "/mkdir", json={"path": "/data/a/b", "parents": True}).status_code == 200
    listed = api.get(base + "/list", params={"path": "/data"}).json()["entries"]
    assert [(e["name"], e["path"], e["type"]) for e in listed] == \
        [("a", "/data/a", "directory"), ("sub", "/data/sub", "directory")]
    assert api.get(base + "/list", params={"path": "/data/sub/b.bin"}).json()["entries"][0][
        "name"] == "b.bin"  # a file lists as itself
    assert api.delete(base, params={"path": "/data", "recursive": "true"}).status_code == 200
    assert not os.path.exists(os.path.join(fake_server.runtime.containers[box].root, "data"))
    # the files API and commands see one file system
    api.put(base, params={"path": "/tmp/x"}, content=b"from-api")
    r = api.post(f"/v1/sandboxes/{box}/exec", json={"argv": ["cat", "x"], "workdir": "/tmp"})
    assert r.json()["stdout"] == "from-api"


def test_file_errors_are_typed(api, box):
    base = f"/v1/sandboxes/{box}/files"

    def agent_code(r, status, code):
        return _err(r, status, code)["details"]["agent_code"]
    assert agent_code(api.get(base, params={"path": "/nope"}), 404, "file_not_found") == "not_found"
    assert agent_code(api.get(base, params={"path": "/tmp"}), 400, "file_error") == "is_a_directory"
    api.put(base, params={"path": "/d/f"}, content=b"x")
    assert agent_code(api.delete(base, params={"path": "/d"}), 400, "file_error") == "not_empty"
    # as the agent: writing under a file fails in makedirs of its parent (EEXIST)
    assert agent_code(api.put(base, params={"path": "/d/f/child"}, content=b"x"), 400,
                      "file_error") == "already_exists"
    assert agent_code(api.get(base + "/stat", params={"path": "/d/f/child"}), 400,
                      "file_error") == "not_a_directory"
    assert agent_code(api.post(base + "/mkdir", json={"path": "/x/y", "parents": False}), 404,
                      "file_not_found") == "not_found"
    assert agent_code(api.post(base + "/mkdir", json={"path": "/d", "parents": False}), 400,
                      "file_error") == "already_exists"
    assert agent_code(api.get(base + "/stat", params={"path": "/gone"}), 404,
                      "file_not_found") == "not_found"
    _err(api.delete(base, params={"path": "/"}), 400, "invalid_request")
    _err(api.get(base, params={"path": "etc/hostname"}), 400, "invalid_request")
    _err(api.get(base), 400, "invalid_request")  # path is required
    _err(api.put(base, params={"path": "/tmp/x", "mode": "99999"}, content=b"x"), 400,
         "invalid_request")


def test_dotdot_cannot_leave_the_container(fake_server, api, box):
    root = fake_server.runtime.containers[box].root
    r = api.put(f"/v1/sandboxes/{box}/files", params={"path": "/../../escape.txt"}, content=b"e")
    assert r.status_code == 200, r.text
    with open(os.path.join(root, "escape.txt"), "rb") as f:
        assert f.read() == b"e"
    assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(root)), "escape.txt"))


# ---- the API's shape -------------------------------------------------------------------
def test_openapi_has_no_422_and_validation_errors_are_400(api):
    schema = api.get("/openapi.json").json()
    codes = {code for ops in schema["paths"].values() for op in ops.values()
             if isinstance(op, dict) for code in op.get("responses", {})}
    assert "422" not in codes and "400" in codes
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    _err(api.post("/v1/sandboxes", json={"memory_mib": "lots"}), 400, "invalid_request")
    _err(api.post("/v1/sandboxes", content=b"{not json",
                  headers={"Content-Type": "application/json"}), 400, "invalid_request")


def test_info_and_ports(fake_server, api):
    info = api.get("/v1/info").json()
    assert (info["runtime"], info["sandboxes_running"]) == ("fake", 0)
    sid = _create(api, encrypted_ports=[8080])["sandbox_id"]
    _err(api.get(f"/v1/sandboxes/{sid}/ports/8080/"), 502, "port_unreachable")
    _err(api.get(f"/v1/sandboxes/{sid}/ports/9090/"), 404, "not_found")
    assert api.get("/v1/info").json()["sandboxes_running"] == 1
