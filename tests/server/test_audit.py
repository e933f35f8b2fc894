"""The audit log: who created, exec'd into, read files of and terminated what; queryable
over REST and `sbx audit`; append-only; never holds command arguments or file contents."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid

import httpx
import pytest

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("server")]


def _records(api, **params):
    for _ in range(50):  # records are written off the request path: allow a moment
        r = api.get("/v1/audit", params=params)
        assert r.status_code == 200, r.text
        recs = r.json()["records"]
        if recs:
            return recs
        time.sleep(0.05)
    return []


def test_a_sandbox_life_is_recorded_in_order(api):
    marker = "secret-arg-" + uuid.uuid4().hex
    content = "content-" + uuid.uuid4().hex
    sb = sbx.Sandbox.create()
    sb.exec("echo", marker).wait()                                   # WebSocket exec
    api.post(f"/v1/sandboxes/{sb.object_id}/exec", json={"argv": ["echo", marker]})
    with sb.open("/tmp/f.txt", "w") as f:
        f.write(content)
    with sb.open("/tmp/f.txt") as f:
        assert f.read() == content
    sb.terminate()
    time.sleep(0.3)
    recs = _records(api, object=sb.object_id)
    actions = [r["action"] for r in recs]
    assert actions[0] == "sandbox.create" and actions[-1] == "sandbox.terminate"
    assert actions.count("sandbox.exec") == 2
    assert {"file.write", "file.read"} <= set(actions)
    assert all(r["principal"] == "admin" for r in recs)
    reads = [r for r in recs if r["action"] == "file.read"]
    assert reads[0]["detail"]["path"] == "/tmp/f.txt" and reads[0]["status"] == 200
    execs = [r for r in recs if r["action"] == "sandbox.exec"]
    assert all(r["detail"]["program"] == "echo" and r["detail"]["argc"] == 2 for r in execs)
    text = json.dumps(recs)
    assert marker not in text and content not in text


def test_filters_and_denied_requests(server, api):
    r = httpx.get(server.url + "/v1/sandboxes", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    denied = _records(api, action="auth.denied", since_s=30)
    assert denied and denied[-1]["principal"] == "anonymous"
    assert denied[-1]["detail"]["path"] == "/v1/sandboxes"
    assert all(rec["action"].startswith("sandbox.")
               for rec in _records(api, action="sandbox", limit=50))
    assert api.get("/v1/audit", params={"limit": 0}).status_code == 400


def test_the_log_is_append_only_on_disk(server, api):
    _records(api, limit=1)
    db = sqlite3.connect(os.path.join(server.home, "audit.db"))
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit SET principal = 'someone-else'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM audit")
    finally:
        db.close()
    assert oct(os.stat(os.path.join(server.home, "audit.db")).st_mode & 0o777) == "0o600"


def test_sbx_audit_cli(server):
    sb = sbx.Sandbox.create()
    sb.terminate()
    time.sleep(0.3)
    env = server.env()
    env["SBX_TOKEN"] = server.token
    r = subprocess.run([sys.executable, "-m", "sandbox_service.cli", "audit", "--object",
                        sb.object_id, "--since", "10m"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TIME", "PRINCIPAL", "ACTION", "OBJECT", "STATUS", "DETAIL"]
    assert "sandbox.create" in lines[1] and "sandbox.terminate" in lines[-1]
    r = subprocess.run([sys.executable, "-m", "sandbox_service.cli", "audit", "--since", "soon"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "90s, 15m" in r.stderr
