"""`sbx run`, `sbx deploy`, `sbx app ...` and `sbx container ...` as real subprocesses
against the real server (Modal's `modal run` / `modal deploy` / `modal app` / `modal
container`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from sbxtest import REPO

CLI = [sys.executable, "-m", "sandbox_service.cli"]
APP = """
import sandbox_service as modal

app = modal.App("cli-fn")


@app.function(scaledown_window=60)
def shout(word: str, times: int = 1, loud: bool = False) -> str:
    print("shouting", word, flush=True)
    out = " ".join([word] * times)
    return out.upper() if loud else out


@app.local_entrypoint()
def main(word: str = "hi", times: int = 2):
    print("entrypoint got", shout.remote(word, times=times))
"""


@pytest.fixture(scope="module")
def env(server) -> dict[str, str]:
    e = server.env()
    e["SBX_TOKEN"] = server.token
    return e


def sbx(env, *args, cwd=REPO, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_run_entrypoint_function_and_bad_arguments(env, tmp_path):
    path = tmp_path / "cli_fn_app.py"
    path.write_text(APP)
    r = sbx(env, "run", str(path), "--word", "yo", "--times", "3")
    assert r.returncode == 0, r.stderr
    assert "entrypoint got yo yo yo\n" in r.stdout
    assert "shouting yo\n" in r.stdout  # the container's output streams here
    r = sbx(env, "run", f"{path}::shout", "--word", "ab", "--loud")
    assert r.returncode == 0, r.stderr
    assert "'AB'" in r.stdout
    r = sbx(env, "run", str(path), "--nope", "1")
    assert r.returncode == 2 and "has no parameter 'nope'" in r.stderr
    r = sbx(env, "run", f"{path}::missing")
    assert r.returncode == 2 and "no local entrypoint, function" in r.stderr
    r = sbx(env, "run", str(tmp_path / "absent.py"))
    assert r.returncode == 2 and "no such file" in r.stderr
    assert "Traceback" not in r.stderr


def test_deploy_app_and_container_commands(env, tmp_path):
    path = tmp_path / "cli_fn_app.py"
    path.write_text(APP)
    name = f"cli-fn-{uuid.uuid4().hex[:8]}"
    r = sbx(env, "deploy", str(path), "--name", name)
    assert r.returncode == 0, r.stderr
    assert f"deployed app {name}" in r.stdout and "shout: fu-" in r.stdout
    call = subprocess.run([sys.executable, "-c", (
        "import sandbox_service as modal; "
        f"print(modal.Function.from_name({name!r}, 'shout').remote('x', times=2))")],
        env=env, capture_output=True, text=True, timeout=180)
    assert call.stdout == "x x\n", call.stderr
    apps = json.loads(sbx(env, "app", "ls", "--json").stdout)
    mine = [a for a in apps if a["name"] == name]
    assert len(mine) == 1 and mine[0]["state"] == "deployed" and mine[0]["functions"] == ["shout"]
    rows = json.loads(sbx(env, "container", "ls", "--app", name, "--json").stdout)
    assert len(rows) == 1 and rows[0]["function_name"] == "shout"
    cid = rows[0]["container_id"]
    r = sbx(env, "container", "exec", cid, "--", "python", "-c", "print('inside', 6 * 7)")
    assert r.returncode == 0 and r.stdout == "inside 42\n", r.stderr
    assert "shouting x" in sbx(env, "container", "logs", cid).stdout
    assert "shouting x" in sbx(env, "app", "logs", name).stdout
    r = sbx(env, "app", "history", name)
    assert r.returncode == 0 and "deployed" in r.stdout
    r = sbx(env, "container", "stop", cid)
    assert r.returncode == 0, r.stderr
    r = sbx(env, "app", "stop", name)
    assert r.returncode == 0 and f"stopped {name}" in r.stdout
    apps = json.loads(sbx(env, "app", "ls", "--all", "--json").stdout)
    assert [a["state"] for a in apps if a["name"] == name] == ["stopped"]
    assert json.loads(sbx(env, "container", "ls", "--json").stdout) == []
    r = sbx(env, "app", "stop", name)
    assert r.returncode == 1 and "no running or deployed app" in r.stderr
    os.remove(path)


def test_run_of_a_module_that_fails_to_import_shows_its_own_frames(env, tmp_path):
    app = tmp_path / "broken_app.py"
    app.write_text("import sandbox_service as modal\napp = modal.App('broken')\n"
                   "raise RuntimeError('bad config value')\n")
    r = sbx(env, "run", str(app))
    assert r.returncode == 1, r.stderr
    assert f'File "{app}", line 3' in r.stderr and "RuntimeError: bad config value" in r.stderr
    assert "_run.py" not in r.stderr and "importlib" not in r.stderr, r.stderr
