"""Named secrets: REST, SDK and CLI; encrypted at rest under a key outside state.db, bound to
their name, never returned, never logged; injected only into the environment of the
sandboxes and build steps that name them. Real server, real runsc."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid

import pytest

import sandbox_service as sbx
from sbxtest import REPO
from sandbox_service._secret import parse_dotenv

pytestmark = [pytest.mark.timeout(600)]
CLI = [sys.executable, "-m", "sandbox_service.cli"]


def _value() -> str:
    return "val-" + uuid.uuid4().hex


def _name() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def _sh(sb, script: str) -> str:
    p = sb.exec("sh", "-c", script)
    out = p.stdout.read()
    assert p.wait() == 0, p.stderr.read()
    return out


def _files_bytes(home: str, patterns: tuple[str, ...]) -> bytes:
    data = b""
    for pat in patterns:
        for path in glob.glob(os.path.join(home, pat)):
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    data += f.read()
    return data


# ---- REST --------------------------------------------------------------------------------
def test_rest_create_list_get_delete_never_return_values(api, server):
    name, v1, v2 = _name(), _value(), _value()
    r = api.post("/v1/secrets", json={"name": name, "env": {"API_KEY": v1, "OTHER": v2}})
    assert r.status_code == 200, r.text
    bodies = [r.text]
    info = r.json()
    assert info["name"] == name and info["keys"] == ["API_KEY", "OTHER"]
    assert info["created_at"] <= info["updated_at"]
    # exists: 409 without overwrite, replaced with it
    r = api.post("/v1/secrets", json={"name": name, "env": {"API_KEY": "x"}})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    bodies.append(r.text)
    r = api.get("/v1/secrets")
    assert r.status_code == 200
    bodies.append(r.text)
    assert name in [s["name"] for s in r.json()["secrets"]]
    r = api.get(f"/v1/secrets/{name}")
    assert r.status_code == 200 and r.json()["keys"] == ["API_KEY", "OTHER"]
    assert set(r.json()) == {"name", "keys", "created_at", "updated_at"}
    bodies.append(r.text)
    for body in bodies:
        assert v1 not in body and v2 not in body
    # the secret's own values reach neither the log nor the database in clear
    assert v1 not in server.tail(500_000) and v2 not in server.tail(500_000)
    stored = _files_bytes(server.home, ("state.db*", "audit.db*", "*.log"))
    assert v1.encode() not in stored and v2.encode() not in stored
    assert b"API_KEY" in stored  # key names are kept in clear (for listing)
    key = os.path.join(server.home, "secrets.key")
    assert os.stat(key).st_mode & 0o777 == 0o600 and os.path.getsize(key) == 32
    r = api.post("/v1/secrets", json={"name": name, "env": {"ONLY": "x"}, "overwrite": True})
    assert r.status_code == 200 and r.json()["keys"] == ["ONLY"]
    assert api.delete(f"/v1/secrets/{name}").status_code == 200
    assert api.get(f"/v1/secrets/{name}").status_code == 404
    r = api.delete(f"/v1/secrets/{name}")
    assert r.status_code == 404 and name in r.json()["error"]["message"]


@pytest.mark.parametrize("body, fragment", [
    ({"name": "-bad", "env": {"A": "1"}}, "name"),
    ({"name": "a" * 65, "env": {"A": "1"}}, "name"),
    ({"name": "a/b", "env": {"A": "1"}}, "name"),
    ({"name": "ok", "env": {"1A": "1"}}, "1A"),
    ({"name": "ok", "env": {"A=B": "1"}}, "A=B"),
    ({"name": "ok", "env": {"A": "x\x00y"}}, "NUL"),
    ({"name": "ok", "env": {"A": "x" * (64 * 1024)}}, "limit"),
    ({"name": "ok", "env": {"A": 5}}, "env"),
])
def test_rest_bad_input_is_a_400(api, body, fragment):
    r = api.post("/v1/secrets", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]["message"]
    assert "x" * 100 not in r.text  # a value is never echoed back


def test_ciphertext_is_bound_to_its_name(api, server):
    a, b = _name(), _name()
    va, vb = _value(), _value()
    assert api.post("/v1/secrets", json={"name": a, "env": {"K": va}}).status_code == 200
    assert api.post("/v1/secrets", json={"name": b, "env": {"K": vb}}).status_code == 200
    db = sqlite3.connect(os.path.join(server.home, "state.db"), isolation_level=None)
    try:
        ca, cb = (db.execute("SELECT ciphertext FROM secrets WHERE name=?", (n,)).fetchone()[0]
                  for n in (a, b))
        db.execute("UPDATE secrets SET ciphertext=? WHERE name=?", (cb, a))
        db.execute("UPDATE secrets SET ciphertext=? WHERE name=?", (ca, b))
    finally:
        db.close()
    with pytest.raises(sbx.SandboxError) as e:
        sbx.Sandbox.create(secrets=[sbx.Secret.from_name(a)])
    assert "cannot be decrypted" in str(e.value) and a in str(e.value)
    assert va not in str(e.value) and vb not in str(e.value)
    # metadata still lists; deleting and re-creating recovers the name
    assert api.get(f"/v1/secrets/{a}").status_code == 200
    for n in (a, b):
        api.delete(f"/v1/secrets/{n}")


# ---- SDK and injection ---------------------------------------------------------------------
def test_sdk_objects_and_sandbox_env(server):
    name, value = _name(), _value()
    sbx.Secret.objects.create(name, {"TOKEN": value, "SHADOWED": "from-secret"})
    with pytest.raises(sbx.SandboxError):  # exists
        sbx.Secret.objects.create(name, {"TOKEN": "x"})
    sbx.Secret.objects.create(name, {"TOKEN": "x"}, allow_existing=True)  # left as is
    listed = sbx.Secret.objects.list()
    assert any(s["name"] == name and s["keys"] == ["SHADOWED", "TOKEN"] for s in listed)
    assert value not in json.dumps(listed)
    ref = sbx.Secret.from_name(name)
    assert value not in repr(ref)
    sb = sbx.Sandbox.create(secrets=[ref], env={"SHADOWED": "from-env"})
    try:
        out = _sh(sb, 'echo "$TOKEN|$SHADOWED"')
        assert out == f"{value}|from-env\n"
        # exec cannot take a named secret (no values leave the server): a clear error
        with pytest.raises(sbx.InvalidRequestError, match="Sandbox.create"):
            sb.exec("true", secrets=[ref])
    finally:
        sb.terminate()
    assert value not in server.tail(500_000)
    assert value.encode() not in _files_bytes(server.home, ("state.db*", "audit.db*", "*.log"))
    # inline secrets still work next to named ones, env= still over both
    sb = sbx.Sandbox.create(secrets=[ref, sbx.Secret.from_dict({"INLINE": "yes"})])
    try:
        assert _sh(sb, 'echo "$TOKEN $INLINE"') == f"{value} yes\n"
    finally:
        sb.terminate()
    sbx.Secret.objects.delete(name)
    sbx.Secret.objects.delete(name, allow_missing=True)


def test_create_deployed_is_modals_older_name(server):
    name = _name()
    assert sbx.Secret.create_deployed(name, {"A": "1"}) == name
    sbx.Secret.create_deployed(name, {"B": "2"}, overwrite=True)
    assert [s["keys"] for s in sbx.Secret.objects.list() if s["name"] == name] == [["B"]]
    sbx.Secret.objects.delete(name)


def test_missing_secret_is_not_found_naming_it(server):
    name = _name()
    ref = sbx.Secret.from_name(name)  # lazy: no error until used
    with pytest.raises(sbx.NotFoundError, match=name):
        sbx.Sandbox.create(secrets=[ref])
    img = sbx.Image.debian_slim().run_commands("true", secrets=[ref])
    with pytest.raises(sbx.SandboxError, match=name):
        img.build()


def test_required_keys_missing_is_a_clear_error(server):
    name = _name()
    sbx.Secret.objects.create(name, {"HAVE": "1"})
    try:
        ref = sbx.Secret.from_name(name, required_keys=["HAVE", "NEED_A", "NEED_B"])
        with pytest.raises(sbx.InvalidRequestError) as e:
            sbx.Sandbox.create(secrets=[ref])
        msg = str(e.value)
        assert name in msg and "NEED_A, NEED_B" in msg and "HAVE" in msg
        with pytest.raises(sbx.InvalidRequestError, match="NEED_A"):
            sbx.Image.debian_slim().run_commands("true", secrets=[ref]).build()
        sb = sbx.Sandbox.create(secrets=[sbx.Secret.from_name(name, required_keys=["HAVE"])])
        sb.terminate()
    finally:
        sbx.Secret.objects.delete(name)


def test_build_step_sees_a_named_secret_but_the_image_does_not_keep_it(server, api):
    name, value = _name(), _value()
    digest = hashlib.sha256(value.encode()).hexdigest()
    sbx.Secret.objects.create(name, {"BUILD_TOKEN": value})
    try:
        img = sbx.Image.debian_slim().run_commands(
            'printf %s "$BUILD_TOKEN" | sha256sum | cut -d" " -f1 > /built-with-token',
            secrets=[sbx.Secret.from_name(name, required_keys=["BUILD_TOKEN"])])
        img.build()
        info = api.get(f"/v1/images/{img.object_id}").json()
        assert "BUILD_TOKEN" not in info["env"]
        sb = sbx.Sandbox.create(image=img)
        try:
            assert _sh(sb, 'cat /built-with-token; echo "[$BUILD_TOKEN]"') == f"{digest}\n[]\n"
        finally:
            sb.terminate()
        assert value not in server.tail(2_000_000)
        assert value.encode() not in _files_bytes(server.home, ("state.db*", "audit.db*", "*.log"))
    finally:
        sbx.Secret.objects.delete(name)


def test_rest_unknown_secret_names_in_create_are_404(api):
    name = _name()
    r = api.post("/v1/sandboxes", json={"secret_names": [name]})
    assert r.status_code == 404 and name in r.json()["error"]["message"], r.text


# ---- .env parsing ------------------------------------------------------------------------
def test_dotenv_parsing():
    text = (
        "# a comment\n"
        "\n"
        "export A=1\n"
        "B = spaced  \n"
        "C='single # not a comment'\n"
        'D="double\\nescaped \\"q\\""\n'
        "E=plain # trailing comment\n"
        "F=\n"
        "NOEQUALS\n"
        'G="multi\nline"\n'
        "H=a#b\n"
        "I='it\\'s'\n"
        "J=\"x\" # after quotes\n"
    )
    assert parse_dotenv(text) == {
        "A": "1", "B": "spaced", "C": "single # not a comment", "D": 'double\nescaped "q"',
        "E": "plain", "F": "", "G": "multi\nline", "H": "a#b", "I": "it's", "J": "x"}
    with pytest.raises(sbx.InvalidRequestError, match="line 1"):
        parse_dotenv("1BAD=x\n")
    with pytest.raises(sbx.InvalidRequestError, match="unterminated"):
        parse_dotenv('A="open\n')


def test_from_dotenv_finds_the_file(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("TOKEN=abc\n")
    (tmp_path / "other.env").write_text("export X='y'\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert sbx.Secret.from_dotenv()._env == {"TOKEN": "abc"}  # found in a parent
    assert sbx.Secret.from_dotenv(str(tmp_path))._env == {"TOKEN": "abc"}
    assert sbx.Secret.from_dotenv(str(tmp_path), filename="other.env")._env == {"X": "y"}
    assert sbx.Secret.from_dotenv(str(tmp_path / "other.env"))._env == {"X": "y"}
    with pytest.raises(sbx.InvalidRequestError):
        sbx.Secret.from_dotenv(str(sub))


def test_from_name_checks_the_name_locally():
    with pytest.raises(sbx.InvalidRequestError):
        sbx.Secret.from_name("../etc")


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_round_trip(server, tmp_path):
    env = server.env()
    env["SBX_TOKEN"] = server.token
    name, value, from_file, from_stdin = _name(), _value(), _value(), _value()
    dotenv = tmp_path / "x.env"
    dotenv.write_text(f"# file\nexport FILE_KEY='{from_file}'\n")

    def run(*args, input=None):
        return subprocess.run([*CLI, "secret", *args], env=env, cwd=REPO, capture_output=True,
                              timeout=120, input=input)

    p = run("create", name, f"ARG_KEY={value}", "STDIN_KEY=-", "--from-dotenv", str(dotenv),
            input=from_stdin.encode() + b"\n")
    assert p.returncode == 0, p.stderr.decode()
    assert b"ARG_KEY, FILE_KEY, STDIN_KEY" in p.stdout
    p = run("create", name, "A=1")
    assert p.returncode != 0 and b"--force" in p.stderr and b"Traceback" not in p.stderr
    p = run("ls")
    assert p.returncode == 0 and name.encode() in p.stdout and b"ARG_KEY" in p.stdout
    p2 = run("ls", "--json")
    for out in (p.stdout, p2.stdout):
        for v in (value, from_file, from_stdin):
            assert v.encode() not in out
    sb = sbx.Sandbox.create(secrets=[sbx.Secret.from_name(name)])
    try:
        assert _sh(sb, 'echo "$ARG_KEY $FILE_KEY $STDIN_KEY"') == f"{value} {from_file} {from_stdin}\n"
    finally:
        sb.terminate()
    p = run("create", name, "A=1", "--force")
    assert p.returncode == 0, p.stderr.decode()
    p = run("rm", name)
    assert p.returncode == 0 and name.encode() in p.stdout
    p = run("rm", name)
    assert p.returncode != 0 and name.encode() in p.stderr and b"Traceback" not in p.stderr
    p = run("create", name, "NOEQUALS")
    assert p.returncode != 0 and b"KEY=VALUE" in p.stderr


def test_state_db_from_before_namespaces_keeps_its_secrets_as_the_admins(tmp_path):
    import asyncio

    from sandbox_service.server.services import AppRecord, SQLiteStore
    from security._secrets import SecretBox

    box = SecretBox(os.urandom(32))
    path = str(tmp_path / "state.db")
    db = sqlite3.connect(path, isolation_level=None)  # the schema secrets had before owners
    db.execute("CREATE TABLE secrets (name TEXT PRIMARY KEY, created_at REAL NOT NULL, "
               "updated_at REAL NOT NULL, ciphertext BLOB NOT NULL, keys TEXT NOT NULL)")
    db.execute("INSERT INTO secrets VALUES (?,?,?,?,?)",
               ("old", 1.0, 2.0, box.seal("old", {"K": "v"}), json.dumps(["K"])))
    db.close()

    async def check():
        store = SQLiteStore(path)
        try:
            rec = await store.get_secret("admin", "old")
            assert await store.get_secret("someone", "old") is None
            assert [r["name"] for r in await store.list_secrets("admin")] == ["old"]
            return rec
        finally:
            await store.close()

    rec = asyncio.run(check())
    assert rec["created_at"] == 1.0 and box.open("old", rec["ciphertext"], "admin") == {"K": "v"}
    with pytest.raises(Exception, match="cannot be decrypted"):
        box.open("old", rec["ciphertext"], "someone")


def test_state_db_from_before_app_namespaces_keeps_its_apps_as_the_admins(tmp_path):
    import asyncio

    from sandbox_service.server.services import AppRecord, SQLiteStore

    path = str(tmp_path / "state.db")
    db = sqlite3.connect(path, isolation_level=None)  # the schema apps had before owners
    db.execute("CREATE TABLE apps (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, "
               "data TEXT NOT NULL)")
    db.execute("INSERT INTO apps VALUES (?,?,?)",
               ("ap-old", "etl", json.dumps({"app_id": "ap-old", "name": "etl", "created_at": 1.0})))
    db.close()

    async def check():
        store = SQLiteStore(path)
        try:
            old = await store.get_app_by_name("admin", "etl")
            assert (old.app_id, old.owner) == ("ap-old", "admin")  # owner filled in, once
            assert await store.get_app_by_name("alice", "etl") is None
            await store.put_app(AppRecord(app_id="ap-new", owner="alice", name="etl"))
            assert (await store.get_app_by_name("alice", "etl")).app_id == "ap-new"
            assert (await store.get_app("ap-old")).name == "etl"
        finally:
            await store.close()

    asyncio.run(check())
