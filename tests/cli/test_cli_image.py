"""`sbx image build|ls|get|rm|gc`, run as a real subprocess against the session's real
server (real builds in gVisor)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(600)

CLI = [sys.executable, "-m", "sandbox_service.cli"]
ID_RE = r"im-[a-z0-9]+"
SIZE_RE = r"\d+ B|\d+\.\d (?:KB|MB|GB)"


@pytest.fixture(scope="module")
def env(server) -> dict[str, str]:
    e = server.env()
    e["SBX_TOKEN"] = server.token
    return e


def sbx(env: dict[str, str], *args: str, cwd: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr, p.stderr
    assert "Traceback" not in p.stdout, p.stdout


def write(path, source: str) -> str:
    path.write_text(textwrap.dedent(source))
    return str(path)


@pytest.fixture(scope="module")
def marker() -> str:
    """Makes this module's recipes unique, so each run builds new layers and records."""
    return os.urandom(6).hex()


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory, marker: str):
    d = tmp_path_factory.mktemp("cli-image")
    write(d / "app.py", f"""\
        import sandbox_service as sbx

        img = sbx.Image.debian_slim().run_commands("echo cli-{marker} > /cli.txt")
        """)
    write(d / "two.py", f"""\
        import sandbox_service as sbx

        base = sbx.Image.debian_slim()
        web = base.run_commands("echo web-{marker} > /web.txt")
        """)
    write(d / "failing.py", f"""\
        import sandbox_service as sbx

        bad = sbx.Image.debian_slim().run_commands(
            "echo about-to-fail-{marker}; echo oops-{marker} >&2; exit 3")
        """)
    write(d / "doomed.py", f"""\
        import sandbox_service as sbx

        doomed = sbx.Image.debian_slim().run_commands("echo doomed-{marker} > /d.txt")
        """)
    return d


@pytest.fixture(scope="module")
def built(env, app_dir) -> str:
    p = sbx(env, "image", "build", "app.py::img", cwd=str(app_dir))
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    m = re.fullmatch(rf"({ID_RE})  built in \d+\.\ds\n", p.stdout)
    assert m, p.stdout
    image_id = m.group(1)
    # the build log streams to stderr
    assert "[2/2]" in p.stderr and f"image {image_id} ready" in p.stderr, p.stderr
    return image_id


# ---- build ---------------------------------------------------------------------------------
def test_build_prints_the_image_id(built: str, server):
    with server.api() as c:
        r = c.get(f"/v1/images/{built}")
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "debian_slim" and r.json()["layers"] == 2


def test_build_single_image_without_var_is_cached(env, app_dir, built: str):
    p = sbx(env, "image", "build", str(app_dir / "app.py"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == built
    assert "cached" in p.stderr, p.stderr


def test_build_json(env, app_dir, built: str):
    p = sbx(env, "image", "build", "--json", "app.py::img", cwd=str(app_dir))
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["image_id"] == built and info["layers"] == 2


def test_build_two_images_needs_a_var(env, app_dir):
    p = sbx(env, "image", "build", "two.py", cwd=str(app_dir))
    no_traceback(p)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.strip() == \
        "sbx: two.py holds 2 Images (base, web): name one as two.py::VAR", p.stderr


def test_build_picks_the_named_var(env, app_dir, server):
    p = sbx(env, "image", "build", "two.py::web", cwd=str(app_dir))
    assert p.returncode == 0, p.stderr
    image_id = p.stdout.split()[0]
    with server.api() as c:
        assert c.get(f"/v1/images/{image_id}").json()["layers"] == 2


@pytest.mark.parametrize("target, message", [
    ("two.py::nope", "two.py has no Image named 'nope'"),
    ("missing.py::img", "missing.py: no such file"),
])
def test_build_usage_errors(env, app_dir, target: str, message: str):
    p = sbx(env, "image", "build", target, cwd=str(app_dir))
    no_traceback(p)
    assert p.returncode == 2
    assert p.stderr.startswith("sbx: " + message), p.stderr


def test_build_failing_step(env, app_dir, marker: str):
    p = sbx(env, "image", "build", "failing.py::bad", cwd=str(app_dir))
    no_traceback(p)
    assert p.returncode == 1
    assert p.stdout == ""
    err = p.stderr.splitlines()
    final = [i for i, line in enumerate(err) if line.startswith("sbx: ")]
    assert final, p.stderr
    # the error itself (not only the streamed log) names the command, its exit code and
    # its last output, stdout and stderr
    error = "\n".join(err[final[-1]:])
    assert "build step failed" in error and "exited with code 3" in error, error
    assert f"about-to-fail-{marker}" in error and f"oops-{marker}" in error, error


# ---- ls / get / rm / gc --------------------------------------------------------------------
def test_ls_lists_the_image(env, built: str):
    p = sbx(env, "image", "ls")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "SOURCE", "LAYERS", "SIZE", "PYTHON", "AGE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert built in rows, p.stdout
    assert re.fullmatch(rf"{built}\s+debian_slim\s+2\s+(?:{SIZE_RE})\s+\S+\s+\d+[smhd]\S*",
                        rows[built]), rows[built]
    assert any("debian_slim (base)" in row for row in rows.values()), p.stdout
    assert re.fullmatch(rf"layers on disk: (?:{SIZE_RE}) \(.*\)", lines[-1]), lines[-1]


def test_ls_json(env, built: str):
    p = sbx(env, "image", "ls", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    ids = [i["image_id"] for i in data["images"]]
    assert built in ids
    assert data["disk_bytes"] > 0


def test_get_prints_json(env, built: str):
    p = sbx(env, "image", "get", built)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["image_id"] == built
    assert info["layers"] == 2
    assert info["python"] and info["size_bytes"] > 0
    assert {"env", "workdir", "entrypoint", "cmd", "user"} <= set(info)


def test_get_unknown_image(env):
    p = sbx(env, "image", "get", "im-doesnotexist0000000")
    no_traceback(p)
    assert p.returncode == 1
    assert p.stderr.startswith("sbx: no image 'im-doesnotexist0000000'"), p.stderr


def test_rm_base_image_is_refused(env):
    base = [i["image_id"] for i in json.loads(sbx(env, "image", "ls", "--json").stdout)["images"]
            if i["source"] == "debian_slim (base)"]
    assert base
    p = sbx(env, "image", "rm", base[0])
    no_traceback(p)
    assert p.returncode == 1
    assert "cannot be removed" in p.stderr, p.stderr


def test_rm_then_get_then_gc(env, app_dir):
    p = sbx(env, "image", "build", "doomed.py", cwd=str(app_dir))
    assert p.returncode == 0, p.stderr
    doomed = p.stdout.split()[0]
    rm = sbx(env, "image", "rm", doomed)
    assert rm.returncode == 0, rm.stderr
    assert rm.stdout == f"removed {doomed}\n"
    got = sbx(env, "image", "get", doomed)
    no_traceback(got)
    assert got.returncode == 1 and got.stderr.startswith("sbx: no image"), got.stderr
    assert doomed not in sbx(env, "image", "ls").stdout
    gc = sbx(env, "image", "gc")
    assert gc.returncode == 0, gc.stderr
    m = re.fullmatch(rf"removed (\d+) layers, freed ({SIZE_RE}); (\d+) layers kept\n", gc.stdout)
    assert m, gc.stdout
    assert int(m.group(1)) >= 1  # at least the doomed image's own run layer
    # a second gc right after has nothing left to remove
    again = sbx(env, "image", "gc")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("removed 0 layers, freed 0 B; "), again.stdout


def test_built_image_survives_gc(env, built: str, server):
    """gc keeps the layers of images that still have records: a sandbox boots from it."""
    assert sbx(env, "image", "gc").returncode == 0
    import sandbox_service as sbx_sdk

    with sbx_sdk.Sandbox.create(image=sbx_sdk.Image.from_id(built), timeout=120) as sb:
        p = sb.exec("cat", "/cli.txt")
        assert p.stdout.read().startswith("cli-")
        assert p.wait() == 0
