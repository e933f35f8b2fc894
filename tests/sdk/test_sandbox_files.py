"""sb.filesystem against real sandboxes: text/bytes round trips (incl. 10 MB), listing,
directories, removal, stat/exists, local copies, typed errors, and that paths (`..`,
symlinks) only ever reach the sandbox's own filesystem."""

from __future__ import annotations

import hashlib
import os

import pytest

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(180)


def sh(sb, script: str) -> tuple[int, str]:
    p = sb.exec("sh", "-c", script)
    out = p.stdout.read()
    p.stderr.read()
    return p.wait(), out


def test_write_read_text(sandbox):
    sandbox.filesystem.write_text("héllo wörld\nline 2\n", "/tmp/a.txt")
    assert sandbox.filesystem.read_text("/tmp/a.txt") == "héllo wörld\nline 2\n"
    # visible to commands in the sandbox, byte for byte
    code, out = sh(sandbox, "cat /tmp/a.txt")
    assert (code, out) == (0, "héllo wörld\nline 2\n")


def test_write_overwrites(sandbox):
    sandbox.filesystem.write_text("first version, long", "/tmp/o.txt")
    sandbox.filesystem.write_text("short", "/tmp/o.txt")
    assert sandbox.filesystem.read_text("/tmp/o.txt") == "short"


def test_write_read_empty_file(sandbox):
    sandbox.filesystem.write_bytes(b"", "/tmp/empty")
    assert sandbox.filesystem.read_bytes("/tmp/empty") == b""
    assert sandbox.filesystem.stat("/tmp/empty").size == 0


def test_write_read_bytes_all_values(sandbox):
    data = bytes(range(256)) * 4
    sandbox.filesystem.write_bytes(data, "/tmp/b.bin")
    assert sandbox.filesystem.read_bytes("/tmp/b.bin") == data


def test_write_read_10mb(sandbox):
    data = os.urandom(10 * 1024 * 1024 + 123)
    sandbox.filesystem.write_bytes(data, "/tmp/big.bin")
    code, out = sh(sandbox, "sha256sum /tmp/big.bin; wc -c < /tmp/big.bin")
    digest, size = out.split()[0], out.split()[-1]
    assert code == 0
    assert digest == hashlib.sha256(data).hexdigest()
    assert int(size) == len(data)
    back = sandbox.filesystem.read_bytes("/tmp/big.bin")
    assert len(back) == len(data)
    assert back == data


def test_read_file_written_by_command(sandbox):
    code, _ = sh(sandbox, "printf 'from\\0cmd' > /tmp/c.bin")
    assert code == 0
    assert sandbox.filesystem.read_bytes("/tmp/c.bin") == b"from\x00cmd"


def test_write_creates_parent_directories(sandbox):
    sandbox.filesystem.write_text("deep", "/tmp/x/y/z/file.txt")
    assert sandbox.filesystem.read_text("/tmp/x/y/z/file.txt") == "deep"
    assert sandbox.filesystem.stat("/tmp/x/y").type == "directory"


def test_write_with_mode(sandbox):
    sandbox.filesystem.write_bytes(b"#!/bin/sh\necho ran-script\n", "/tmp/run.sh", mode=0o755)
    assert sandbox.filesystem.stat("/tmp/run.sh").mode == 0o755
    p = sandbox.exec("/tmp/run.sh")
    assert p.stdout.read() == "ran-script\n"
    assert p.wait() == 0


def test_list_files(sandbox):
    fs = sandbox.filesystem
    fs.make_directory("/tmp/ls/sub")
    fs.write_text("12345", "/tmp/ls/five.txt")
    fs.write_bytes(b"", "/tmp/ls/zero")
    sh(sandbox, "ln -s /etc/hostname /tmp/ls/link")
    entries = {e.name: e for e in fs.list_files("/tmp/ls")}
    assert set(entries) == {"sub", "five.txt", "zero", "link"}
    assert entries["sub"].type == "directory"
    assert entries["five.txt"].type == "file"
    assert entries["five.txt"].size == 5
    assert entries["five.txt"].path == "/tmp/ls/five.txt"
    assert entries["zero"].size == 0
    assert entries["link"].type == "symlink"
    assert [e.name for e in fs.list_files("/tmp/ls")] == sorted(entries)


def test_list_files_of_a_file(sandbox):
    sandbox.filesystem.write_text("x", "/tmp/single")
    entries = sandbox.filesystem.list_files("/tmp/single")
    assert [(e.name, e.type, e.size) for e in entries] == [("single", "file", 1)]


def test_list_root(sandbox):
    names = {e.name for e in sandbox.filesystem.list_files("/")}
    assert {"bin", "etc", "tmp", "usr", "proc"} <= names


def test_make_directory(sandbox):
    fs = sandbox.filesystem
    fs.make_directory("/tmp/m1/m2/m3")
    assert fs.stat("/tmp/m1/m2/m3").type == "directory"
    fs.make_directory("/tmp/m1/m2/m3")  # parents=True: exists is fine
    with pytest.raises(sbx.SandboxError):
        fs.make_directory("/tmp/m1", parents=False)  # already exists
    with pytest.raises(sbx.SandboxFileNotFoundError):
        fs.make_directory("/tmp/nope/child", parents=False)


def test_remove_file_and_dirs(sandbox):
    fs = sandbox.filesystem
    fs.write_text("x", "/tmp/r/f.txt")
    fs.write_text("y", "/tmp/r/sub/g.txt")
    fs.remove("/tmp/r/f.txt")
    assert not fs.exists("/tmp/r/f.txt")
    # non-recursive removal of a non-empty directory fails and keeps it
    with pytest.raises(sbx.SandboxFileError):
        fs.remove("/tmp/r")
    assert fs.exists("/tmp/r/sub/g.txt")
    fs.remove("/tmp/r", recursive=True)
    assert not fs.exists("/tmp/r")
    # empty directory without recursive
    fs.make_directory("/tmp/emptydir")
    fs.remove("/tmp/emptydir")
    assert not fs.exists("/tmp/emptydir")


def test_remove_missing(sandbox):
    with pytest.raises(sbx.SandboxFileNotFoundError):
        sandbox.filesystem.remove("/tmp/definitely-missing")


def test_remove_root_refused(sandbox):
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.filesystem.remove("/", recursive=True)
    code, out = sh(sandbox, "test -x /bin/sh && echo still-there")
    assert (code, out) == (0, "still-there\n")


def test_remove_symlink_keeps_target(sandbox):
    fs = sandbox.filesystem
    fs.write_text("target", "/tmp/target.txt")
    sh(sandbox, "ln -s /tmp/target.txt /tmp/link.txt")
    fs.remove("/tmp/link.txt")
    assert fs.read_text("/tmp/target.txt") == "target"
    assert not fs.exists("/tmp/link.txt")


def test_stat_and_exists(sandbox):
    fs = sandbox.filesystem
    fs.write_text("abc", "/tmp/s.txt")
    st = fs.stat("/tmp/s.txt")
    assert (st.name, st.path, st.type, st.size) == ("s.txt", "/tmp/s.txt", "file", 3)
    assert st.mtime > 0
    assert fs.stat("/tmp").type == "directory"
    assert fs.exists("/tmp/s.txt") is True
    assert fs.exists("/tmp/nope.txt") is False
    with pytest.raises(sbx.SandboxFileNotFoundError):
        fs.stat("/tmp/nope.txt")


def test_missing_file_is_file_not_found(sandbox):
    with pytest.raises(sbx.SandboxFileNotFoundError) as ei:
        sandbox.filesystem.read_text("/tmp/missing.txt")
    assert isinstance(ei.value, FileNotFoundError)
    assert isinstance(ei.value, sbx.NotFoundError)


def test_read_directory_is_error(sandbox):
    with pytest.raises(sbx.SandboxFileError):
        sandbox.filesystem.read_bytes("/tmp")


def test_write_into_missing_parent_of_file(sandbox):
    sandbox.filesystem.write_text("f", "/tmp/notadir")
    with pytest.raises(sbx.SandboxError) as ei:
        sandbox.filesystem.write_text("x", "/tmp/notadir/child")
    assert ei.value.code in ("file_error", "file_not_found")


def test_relative_path_is_invalid(sandbox, api):
    fs = sandbox.filesystem
    for call in (lambda: fs.read_text("etc/passwd"), lambda: fs.write_text("x", "tmp/x"),
                 lambda: fs.list_files("tmp"), lambda: fs.make_directory("a/b"),
                 lambda: fs.remove("tmp/x"), lambda: fs.stat("x")):
        with pytest.raises(sbx.InvalidRequestError):
            call()
    # and the server refuses it too (not only the SDK)
    base = f"/v1/sandboxes/{sandbox.object_id}/files"
    for method, url, kw in (("GET", base, {"params": {"path": "etc/passwd"}}),
                            ("PUT", base, {"params": {"path": "tmp/x"}, "content": b"x"}),
                            ("GET", base + "/list", {"params": {"path": "tmp"}}),
                            ("GET", base + "/stat", {"params": {"path": "tmp"}}),
                            ("DELETE", base, {"params": {"path": "tmp"}}),
                            ("POST", base + "/mkdir", {"json": {"path": "a/b"}})):
        r = api.request(method, url, **kw)
        assert r.status_code == 400, (method, url, r.text)
        assert r.json()["error"]["code"] == "invalid_request"


def test_copy_from_and_to_local(sandbox, tmp_path):
    src = tmp_path / "up.bin"
    data = os.urandom(3 * 1024 * 1024 + 5)
    src.write_bytes(data)
    sandbox.filesystem.copy_from_local(src, "/tmp/up.bin")
    code, out = sh(sandbox, "sha256sum /tmp/up.bin")
    assert out.split()[0] == hashlib.sha256(data).hexdigest()
    dst = tmp_path / "down.bin"
    sandbox.filesystem.copy_to_local("/tmp/up.bin", dst)
    assert dst.read_bytes() == data
    assert not (tmp_path / "down.bin.sbx-partial").exists()


def test_copy_to_local_missing_leaves_nothing(sandbox, tmp_path):
    dst = tmp_path / "never.bin"
    with pytest.raises(sbx.SandboxFileNotFoundError):
        sandbox.filesystem.copy_to_local("/tmp/never-there", dst)
    assert not dst.exists()
    assert os.listdir(tmp_path) == []


def test_copy_from_local_missing_file(sandbox, tmp_path):
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.filesystem.copy_from_local(tmp_path / "nope", "/tmp/x")


def test_write_type_checks(sandbox):
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.filesystem.write_bytes("str not bytes", "/tmp/x")  # type: ignore[arg-type]
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.filesystem.write_text(b"bytes not str", "/tmp/x")  # type: ignore[arg-type]


def test_files_are_private_to_each_sandbox(sandbox):
    sandbox.filesystem.write_text("mine", "/tmp/private.txt")
    other = sbx.Sandbox.create(timeout=60)
    try:
        assert not other.filesystem.exists("/tmp/private.txt")
    finally:
        other.terminate()


def test_root_filesystem_is_writable_through_overlay(sandbox):
    """The image is read-only and shared, but each sandbox writes to its own overlay:
    HOME (/root), /etc, /usr/local, /opt must be writable, as in a normal container."""
    for d in ("/root", "/etc", "/usr/local", "/opt"):
        sandbox.filesystem.write_text("ok", f"{d}/sbx-write-test")
        assert sandbox.filesystem.read_text(f"{d}/sbx-write-test") == "ok"
    code, out = sh(sandbox, "echo hi > $HOME/.x && cat $HOME/.x")
    assert (code, out) == (0, "hi\n")


def test_overlay_writes_do_not_leak_into_other_sandboxes(sandbox):
    try:
        sandbox.filesystem.write_text("poison", "/etc/sbx-overlay-probe")
    except sbx.SandboxFileError:
        pytest.skip("root filesystem is read-only (see test_root_filesystem_is_writable)")
    other = sbx.Sandbox.create(timeout=60)
    try:
        assert not other.filesystem.exists("/etc/sbx-overlay-probe")
    finally:
        other.terminate()


# ---- containment of paths ----------------------------------------------------------------
def _host_passwd() -> str:
    with open("/etc/passwd") as f:
        return f.read()


def test_path_traversal_reads_sandbox_passwd(sandbox):
    via_dots = sandbox.filesystem.read_text("/tmp/../../etc/passwd")
    code, direct = sh(sandbox, "cat /etc/passwd")
    assert code == 0
    assert via_dots == direct
    assert via_dots.startswith("root:x:0:0:")
    host = _host_passwd()
    if host != direct:
        assert via_dots != host
    # the image's passwd, not the host's: the host's users the image lacks are absent
    image_users = {line.split(":")[0] for line in via_dots.splitlines() if line}
    host_only = {line.split(":")[0] for line in host.splitlines() if line} - image_users
    for user in host_only:
        assert f"\n{user}:" not in "\n" + via_dots


def test_symlink_to_root_stays_inside(sandbox):
    code, _ = sh(sandbox, "ln -s / /tmp/rootlink && ln -s ../../../../../.. /tmp/up "
                 "&& ln -s /etc /tmp/etclink")
    assert code == 0
    # a link to / lists the sandbox's root (it has /.sbx, the agent mount), not the host's
    for link in ("/tmp/rootlink", "/tmp/up"):
        names = {e.name for e in sandbox.filesystem.list_files(link + "/")}
        assert ".sbx" in names, (link, names)
    assert not os.path.exists("/.sbx")
    # reading through a link gives the sandbox's file, never the host's
    via_link = sandbox.filesystem.read_text("/tmp/etclink/passwd")
    assert via_link == sandbox.filesystem.read_text("/etc/passwd")
    if _host_passwd() != via_link:
        for path in ("/tmp/rootlink/etc/passwd", "/tmp/up/etc/passwd"):
            try:
                content = sandbox.filesystem.read_text(path)
            except sbx.SandboxError:
                continue  # gVisor of 2022 mis-resolves paths under a link to /: still inside
            assert content != _host_passwd()
    # a write through the links lands in the sandbox, never on the host
    marker = "sbx-marker-" + os.urandom(6).hex()
    for path in (f"/tmp/rootlink/tmp/{marker}", f"/tmp/up/tmp/{marker}", f"/tmp/etclink/{marker}"):
        try:
            sandbox.filesystem.write_text("x", path)
        except sbx.SandboxError:
            pass
    assert not os.path.exists(f"/tmp/{marker}")
    assert not os.path.exists(f"/etc/{marker}")


def test_write_through_symlink_to_host_path_name(sandbox):
    """A symlink pointing at a path that exists on the host resolves inside the sandbox."""
    name = "sbx-host-probe-" + os.urandom(6).hex()
    host_path = f"/tmp/{name}"
    code, _ = sh(sandbox, f"ln -s {host_path} /tmp/evil")
    assert code == 0
    sandbox.filesystem.write_text("inside", "/tmp/evil")
    assert not os.path.exists(host_path)
    assert sandbox.filesystem.read_text("/tmp/evil") == "inside"


def test_agent_socket_dir_only_holds_socket(sandbox):
    """The only writable host path inside the sandbox is its own socket dir."""
    entries = {e.name for e in sandbox.filesystem.list_files("/.sbx/run")}
    assert entries <= {"agent.sock"}
    with pytest.raises(sbx.SandboxFileError):
        sandbox.filesystem.write_text("x", "/.sbx/agent/evil.py")
