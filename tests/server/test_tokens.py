"""API keys, scoped tokens and ownership against a real server: a principal sees only its
own objects (another's answer exactly like unknown ids), sandbox tokens reach one
sandbox's exec and files only, app tokens one app, keys expire and revoke."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid

import httpx
import pytest

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("server")]


def key_for(api, principal, **kw):
    r = api.post("/v1/tokens", json={"scope": "user", "principal": principal, **kw})
    assert r.status_code == 201, r.text
    return r.json()


def client(server, token):
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                        timeout=120)


@pytest.fixture(scope="module")
def people(server):
    with server.api() as api:
        alice = key_for(api, "alice-" + uuid.uuid4().hex[:6])
        bob = key_for(api, "bob-" + uuid.uuid4().hex[:6])
    with client(server, alice["token"]) as a, client(server, bob["token"]) as b:
        yield {"alice": alice, "bob": bob, "a": a, "b": b}


@pytest.fixture(scope="module")
def alices_sandbox(people):
    r = people["a"].post("/v1/sandboxes", json={})
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    yield sid
    people["a"].delete(f"/v1/sandboxes/{sid}")


def test_keys_are_hashed_and_shown_once(server, api, people):
    key = people["alice"]["token"]
    assert key.startswith("sbk_") and "hash" not in people["alice"]
    listed = api.get("/v1/tokens").json()["tokens"]
    assert people["alice"]["id"] in {t["id"] for t in listed}
    assert key not in str(listed)
    db = open(os.path.join(server.home, "keys.db"), "rb").read()
    assert key.encode() not in db and key.split("_", 2)[2].encode() not in db


def test_another_principals_sandbox_does_not_exist_for_you(people, alices_sandbox):
    a, b = people["a"], people["b"]
    assert a.get(f"/v1/sandboxes/{alices_sandbox}").status_code == 200
    unknown = "sb-" + "z" * 20
    for path in ("", "/logs", "/files?path=/etc/hostname", "/files/list?path=/"):
        mine = b.get(f"/v1/sandboxes/{alices_sandbox}{path}")
        none = b.get(f"/v1/sandboxes/{unknown}{path}")
        assert mine.status_code == none.status_code == 404
        assert mine.json()["error"]["message"].replace(alices_sandbox, "X") == \
            none.json()["error"]["message"].replace(unknown, "X")
    r = b.post(f"/v1/sandboxes/{alices_sandbox}/exec", json={"argv": ["true"]})
    assert r.status_code == 404
    assert b.delete(f"/v1/sandboxes/{alices_sandbox}").status_code == 404
    assert alices_sandbox not in {s["sandbox_id"] for s in b.get("/v1/sandboxes").json()["sandboxes"]}
    assert alices_sandbox in {s["sandbox_id"] for s in a.get("/v1/sandboxes").json()["sandboxes"]}
    # the operator still sees everything
    with pytest.raises(sbx.NotFoundError):
        sbx.Sandbox.from_id(unknown)
    assert sbx.Sandbox.from_id(alices_sandbox).object_id == alices_sandbox


def test_websocket_exec_is_owned_too(server, people, alices_sandbox):
    import json

    from websockets.sync.client import connect

    url = "ws" + server.url[4:] + f"/v1/sandboxes/{alices_sandbox}/exec/stream"
    for token, code in ((people["bob"]["token"], "not_found"), (people["alice"]["token"], None)):
        with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            ws.send(json.dumps({"argv": ["echo", "hi"]}))
            first = json.loads(ws.recv(timeout=30))
            assert first.get("code") == code if code else first["type"] == "started", first


def test_sandbox_token_reaches_exec_and_files_of_one_sandbox_only(server, people, alices_sandbox):
    a = people["a"]
    r = a.post("/v1/tokens", json={"scope": "sandbox", "sandbox_id": alices_sandbox, "ttl_s": 600})
    assert r.status_code == 201, r.text
    with client(server, r.json()["token"]) as t:
        ex = t.post(f"/v1/sandboxes/{alices_sandbox}/exec", json={"argv": ["echo", "hi"]})
        assert ex.status_code == 200 and ex.json()["stdout"] == "hi\n"
        assert t.put(f"/v1/sandboxes/{alices_sandbox}/files", params={"path": "/tmp/t"},
                     content=b"x").status_code == 200
        assert t.get(f"/v1/sandboxes/{alices_sandbox}/files", params={"path": "/tmp/t"}).content == b"x"
        assert t.delete(f"/v1/sandboxes/{alices_sandbox}").status_code == 403
        assert t.post(f"/v1/sandboxes/{alices_sandbox}/snapshot").status_code == 403
        assert t.get("/v1/sandboxes").status_code == 403
        assert t.post("/v1/sandboxes", json={}).status_code == 403
        assert t.get("/v1/images").status_code == 403
        assert t.post("/v1/tokens", json={"scope": "sandbox", "sandbox_id": alices_sandbox}).status_code == 403
        other = a.post("/v1/sandboxes", json={}).json()["sandbox_id"]
        try:
            assert t.get(f"/v1/sandboxes/{other}").status_code == 404  # as if unknown
        finally:
            a.delete(f"/v1/sandboxes/{other}")
    # bob cannot mint one for alice's sandbox
    r = people["b"].post("/v1/tokens", json={"scope": "sandbox", "sandbox_id": alices_sandbox})
    assert r.status_code == 404


def test_sdk_mints_a_sandbox_token(server):
    sb = sbx.Sandbox.create()
    try:
        tok = sb.create_access_token(ttl=60)
        with client(server, tok) as t:
            assert t.post(f"/v1/sandboxes/{sb.object_id}/exec",
                          json={"argv": ["echo", "ok"]}).json()["stdout"] == "ok\n"
            assert t.delete(f"/v1/sandboxes/{sb.object_id}").status_code == 403
    finally:
        sb.terminate()


def test_expired_and_revoked_keys_are_refused(server, api):
    short = key_for(api, "carol-" + uuid.uuid4().hex[:6], ttl_s=1)
    with client(server, short["token"]) as c:
        assert c.get("/v1/sandboxes").status_code == 200
        time.sleep(1.5)
        r = c.get("/v1/sandboxes")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    k = key_for(api, "dave-" + uuid.uuid4().hex[:6])
    with client(server, k["token"]) as c:
        assert c.get("/v1/sandboxes").status_code == 200
        assert api.delete(f"/v1/tokens/{k['id']}").status_code == 200
        time.sleep(1.2)
        assert c.get("/v1/sandboxes").status_code == 401
    # a forged secret for a real id is refused
    with client(server, f"sbk_{k['id']}_{'A' * 43}") as c:
        assert c.get("/v1/sandboxes").status_code == 401


def test_users_cannot_make_user_keys_or_read_the_audit_log(people):
    b = people["b"]
    assert b.post("/v1/tokens", json={"scope": "user", "principal": "mallory"}).status_code == 403
    assert b.get("/v1/audit").status_code == 403
    assert b.post("/v1/images/gc").status_code == 403


def test_app_token_creates_and_sees_only_its_app(server, people):
    a = people["a"]
    app = a.post("/v1/apps/lookup", json={"name": "tok-app-" + uuid.uuid4().hex[:6],
                                          "create_if_missing": True}).json()
    r = a.post("/v1/tokens", json={"scope": "app", "app_id": app["app_id"], "ttl_s": 600})
    assert r.status_code == 201, r.text
    outside = a.post("/v1/sandboxes", json={}).json()["sandbox_id"]
    try:
        with client(server, r.json()["token"]) as t:
            created = t.post("/v1/sandboxes", json={})
            assert created.status_code == 201 and created.json()["app_id"] == app["app_id"]
            inside = created.json()["sandbox_id"]
            listed = {s["sandbox_id"] for s in t.get("/v1/sandboxes").json()["sandboxes"]}
            assert inside in listed and outside not in listed
            assert t.get(f"/v1/sandboxes/{outside}").status_code == 404
            assert t.delete(f"/v1/sandboxes/{inside}").status_code == 200
            assert t.post("/v1/sandboxes", json={"app_id": "ap-" + "x" * 20}).status_code == 403
    finally:
        a.delete(f"/v1/sandboxes/{outside}")


def test_apps_are_named_per_principal_and_not_shared(server, people, api):
    a, b = people["a"], people["b"]
    name = "shared-name-" + uuid.uuid4().hex[:6]
    app_a = a.post("/v1/apps/lookup", json={"name": name, "create_if_missing": True}).json()
    # bob does not find alice's app by name; he gets one of his own
    assert b.post("/v1/apps/lookup", json={"name": name}).status_code == 404
    app_b = b.post("/v1/apps/lookup", json={"name": name, "create_if_missing": True}).json()
    assert app_b["app_id"] != app_a["app_id"]
    assert a.post("/v1/apps/lookup", json={"name": name}).json()["app_id"] == app_a["app_id"]
    # ... and cannot mint a token for alice's app or create sandboxes in it
    r = b.post("/v1/tokens", json={"scope": "app", "app_id": app_a["app_id"], "ttl_s": 60})
    assert r.status_code == 404, r.text
    assert b.post("/v1/sandboxes", json={"app_id": app_a["app_id"]}).status_code == 404
    # an app token of alice's app sees alice's sandboxes in it, not the admin's
    tok = a.post("/v1/tokens", json={"scope": "app", "app_id": app_a["app_id"], "ttl_s": 600})
    assert tok.status_code == 201, tok.text
    by_admin = api.post("/v1/sandboxes", json={"app_id": app_a["app_id"]}).json()["sandbox_id"]
    try:
        with client(server, tok.json()["token"]) as t:
            assert t.get(f"/v1/sandboxes/{by_admin}").status_code == 404
            assert t.post("/v1/apps/lookup", json={"name": "other"}).status_code == 403
            assert t.post("/v1/apps/lookup", json={"name": name}).json()["app_id"] == app_a["app_id"]
    finally:
        api.delete(f"/v1/sandboxes/{by_admin}")


def test_images_belong_to_who_built_them(server, people):
    a, b = people["a"], people["b"]
    steps = [{"kind": "debian_slim"}, {"kind": "run", "commands": [f"echo {uuid.uuid4().hex} > /m"]}]
    r = a.post("/v1/images", json={"steps": steps})
    image_id = [__import__("json").loads(x) for x in r.text.splitlines() if x.strip()][-1]["image"]["image_id"]
    assert a.get(f"/v1/images/{image_id}").status_code == 200
    assert b.get(f"/v1/images/{image_id}").status_code == 404
    assert image_id not in {i["image_id"] for i in b.get("/v1/images").json()["images"]}
    r = b.post("/v1/sandboxes", json={"image": image_id})
    assert r.status_code == 404
    r = b.post("/v1/images", json={"steps": [{"kind": "image", "image_id": image_id}]})
    assert '"not_found"' in r.text


def test_audit_names_the_principal(api, people, alices_sandbox):
    time.sleep(0.3)
    recs = api.get("/v1/audit", params={"object": alices_sandbox}).json()["records"]
    assert recs[0]["action"] == "sandbox.create"
    assert recs[0]["principal"] == people["alice"]["principal"]


def test_sbx_token_cli(server):
    env = server.env()
    env["SBX_TOKEN"] = server.token
    run = lambda *a: subprocess.run([sys.executable, "-m", "sandbox_service.cli", "token", *a],
                                    env=env, capture_output=True, text=True, timeout=60)
    r = run("create", "--principal", "erin-" + uuid.uuid4().hex[:6], "--ttl", "1h", "--name", "ci")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("sbk_") and "store it now" in r.stderr
    tid = r.stderr.split()[1]
    ls = run("ls")
    assert tid in ls.stdout and "expires in" in ls.stdout
    assert run("revoke", tid).returncode == 0
    assert "revoked" in [line.split()[-1] for line in run("ls").stdout.splitlines() if tid in line]


def _env_of(c, sid, var):
    r = c.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["sh", "-c", f'printf %s "${var}"']})
    assert r.status_code == 200, r.text
    return r.json()["stdout"]


def test_named_secrets_have_one_namespace_per_principal(server, api, people, alices_sandbox):
    a, b = people["a"], people["b"]
    name = "db-" + uuid.uuid4().hex[:6]
    va, vb = "alice-" + uuid.uuid4().hex, "bob-" + uuid.uuid4().hex
    assert a.post("/v1/secrets", json={"name": name, "env": {"PW": va}}).status_code == 200
    # bob cannot see, read, use, overwrite or delete alice's: it does not exist for him
    unknown = b.get("/v1/secrets/never-made-" + uuid.uuid4().hex[:6])
    seen = b.get(f"/v1/secrets/{name}")
    assert seen.status_code == unknown.status_code == 404
    assert seen.json()["error"]["message"].replace(name, "X") == \
        unknown.json()["error"]["message"].replace(unknown.url.path.rsplit("/", 1)[1], "X")
    assert name not in b.get("/v1/secrets").text
    assert b.delete(f"/v1/secrets/{name}").status_code == 404
    r = b.post("/v1/sandboxes", json={"secret_names": [name]})
    assert r.status_code == 404 and va not in r.text
    r = b.post("/v1/images", json={"steps": [{"kind": "debian_slim"}, {
        "kind": "run", "commands": ["true"], "secret_names": [name]}]})
    assert va not in r.text and (r.status_code == 404 or '"not_found"' in r.text), r.text
    # ... and has his own of the same name; the admin's namespace is a third one
    assert b.post("/v1/secrets", json={"name": name, "env": {"PW": vb}}).status_code == 200
    assert api.get(f"/v1/secrets/{name}").status_code == 404
    assert [s["name"] for s in a.get("/v1/secrets").json()["secrets"]] == [name]
    sids = {}
    for who, c in (("a", a), ("b", b)):
        r = c.post("/v1/sandboxes", json={"secret_names": [name]})
        assert r.status_code == 201, r.text
        sids[who] = r.json()["sandbox_id"]
    try:
        assert _env_of(a, sids["a"], "PW") == va
        assert _env_of(b, sids["b"], "PW") == vb
    finally:
        for who, c in (("a", a), ("b", b)):
            c.delete(f"/v1/sandboxes/{sids[who]}")
    # a ciphertext moved into another namespace does not open there
    db = sqlite3.connect(os.path.join(server.home, "state.db"), isolation_level=None)
    try:
        ct = db.execute("SELECT ciphertext FROM secrets WHERE owner=? AND name=?",
                        (people["alice"]["principal"], name)).fetchone()[0]
        db.execute("UPDATE secrets SET ciphertext=? WHERE owner=? AND name=?",
                   (ct, people["bob"]["principal"], name))
    finally:
        db.close()
    r = b.post("/v1/sandboxes", json={"secret_names": [name]})
    assert r.status_code == 409 and "cannot be decrypted" in r.text and va not in r.text
    # sandbox tokens and app tokens cannot manage secrets
    tok = a.post("/v1/tokens", json={"scope": "sandbox", "sandbox_id": alices_sandbox,
                                      "ttl_s": 60})
    assert tok.status_code == 201, tok.text
    with client(server, tok.json()["token"]) as t:
        assert t.get("/v1/secrets").status_code in (403, 404)
    for c in (a, b):
        assert c.delete(f"/v1/secrets/{name}").status_code == 200
