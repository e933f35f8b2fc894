"""`sbx volume ...` as a real subprocess against a real server: create, put a file and a
directory, ls, get to a file, a directory and stdout, the --force rules both ways, cp, rm -r,
list with usage, delete."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from sbxtest import REPO

CLI = [sys.executable, "-m", "sandbox_service.cli", "volume"]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env(server) -> dict[str, str]:
    return dict(server.env(), SBX_TOKEN=server.token)


def vol(env, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], env=env, cwd=REPO, capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    if ok:
        assert p.returncode == 0, p.stderr.decode()
    return p


def test_volume_cli_round_trip(env, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    assert "vo-" in vol(env, "create", name).stdout.decode()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    single = tmp_path / "one.txt"
    single.write_text("one")
    vol(env, "put", name, str(single), "/docs/")         # keeps its name under docs/
    vol(env, "put", name, str(src), "/tree")
    listing = vol(env, "ls", name).stdout.decode()
    assert "docs/" in listing and "tree/" in listing and "directory" in listing
    entries = json.loads(vol(env, "ls", name, "tree", "--json").stdout)["entries"]
    assert sorted(e["path"] for e in entries) == ["tree/a.txt", "tree/sub"]
    # an existing file needs --force, both ways; a directory upload that would overwrite one
    # uploads nothing
    p = vol(env, "put", name, str(single), "/docs/one.txt", ok=False)
    assert p.returncode == 1 and b"--force" in p.stderr
    (src / "c.txt").write_text("C")
    p = vol(env, "put", name, str(src), "/tree", ok=False)
    assert p.returncode == 1 and b"tree/a.txt" in p.stderr and b"nothing was uploaded" in p.stderr
    assert "tree/c.txt" not in vol(env, "ls", name, "tree").stdout.decode()
    (src / "c.txt").unlink()
    single.write_text("two")
    vol(env, "put", name, str(single), "/docs/one.txt", "--force")
    assert vol(env, "get", name, "docs/one.txt", "-").stdout == b"two"
    out = tmp_path / "out"
    out.mkdir()
    vol(env, "get", name, "docs/one.txt", str(out))
    assert (out / "one.txt").read_text() == "two"
    p = vol(env, "get", name, "docs/one.txt", str(out), ok=False)
    assert p.returncode == 1 and b"--force" in p.stderr
    vol(env, "get", name, "tree", str(out))             # a directory, recursively
    assert (out / "tree" / "sub" / "b.txt").read_text() == "B"
    # a local directory in the way: one line, exit 1, no temporary file left
    (out / "clash" / "one.txt").mkdir(parents=True)
    p = vol(env, "get", name, "docs/one.txt", str(out / "clash"), "--force", ok=False)
    assert p.returncode == 1 and b"directory" in p.stderr
    assert [f.name for f in (out / "clash").iterdir()] == ["one.txt"]
    # cp and rm
    vol(env, "cp", name, "tree", "copy", "-r")
    assert vol(env, "get", name, "copy/sub/b.txt", "-").stdout == b"B"
    p = vol(env, "rm", name, "copy", ok=False)
    assert p.returncode == 1 and b"recursive" in p.stderr
    vol(env, "rm", name, "copy", "-r")
    assert "copy" not in vol(env, "ls", name).stdout.decode()
    p = vol(env, "get", name, "nope.txt", "-", ok=False)
    assert p.returncode == 1 and b"no such file" in p.stderr
    listed = vol(env, "list").stdout.decode()
    assert name in listed and "MiB of" in listed
    # delete asks for --yes when it cannot ask
    p = vol(env, "delete", name, ok=False)
    assert p.returncode == 1 and b"--yes" in p.stderr
    vol(env, "delete", name, "--yes")
    p = vol(env, "ls", name, ok=False)
    assert p.returncode == 1 and b"create_if_missing" in p.stderr
    vol(env, "delete", name, "--yes", "--allow-missing")


def test_volume_cli_get_skips_symlinks(env, server, tmp_path):
    """A symlink written in a container is never followed: `get` of it fails, and `get` of
    its directory downloads the real files and says what it skipped."""
    import sandbox_service as sbx

    name = f"cli-{uuid.uuid4().hex[:8]}"
    vol(env, "create", name)
    try:
        sb = sbx.Sandbox.create(volumes={"/data": sbx.Volume.from_name(name)}, timeout=120)
        try:
            p = sb.exec("sh", "-c", "mkdir /data/d && ln -s /etc/passwd /data/d/link && "
                        "echo real > /data/d/real.txt")
            p.wait()
            assert p.returncode == 0, p.stderr.read()
        finally:
            sb.terminate()
        assert "symlink" in vol(env, "ls", name, "d").stdout.decode()
        p = vol(env, "get", name, "d/link", "-", ok=False)
        assert p.returncode == 1 and b"symlink" in p.stderr and b"root:" not in p.stdout
        p = vol(env, "get", name, "d", str(tmp_path))
        assert b"skipping 1 symlink" in p.stderr
        assert sorted(f.name for f in (tmp_path / "d").iterdir()) == ["real.txt"]
    finally:
        vol(env, "delete", name, "--yes")
