"""Volumes through the real server: the API from the client, a hostile tree written by a
sandbox (links, FIFOs, device nodes), function containers sharing one volume (commit and
reload, concurrent writers, read-only mounts, the API from inside), the quota (ENOSPC inside,
a typed error outside), principals kept apart, and a server restart under a mounted volume."""

from __future__ import annotations

import glob
import io
import os
import uuid

import fnapp_vol as m
import fntest
import httpx
import pytest

import sandbox_service as modal
from sandbox_service.exception import NotFoundError, StorageFullError
from sandbox_service.volume import FileEntryType

pytestmark = pytest.mark.timeout(300)


def _name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _tree(vol, path="/"):
    return {e.path: e.type for e in vol.listdir(path, recursive=True)}


def test_volume_api_from_the_client(server, tmp_path):
    name = _name("vol")
    with pytest.raises(NotFoundError, match="create_if_missing"):
        modal.Volume.from_name(name).listdir("/")
    vol = modal.Volume.from_name(name, create_if_missing=True)
    assert vol.listdir("/") == []
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("A")
    (local / "sub" / "b.txt").write_text("B")
    with vol.batch_upload() as batch:
        batch.put_directory(local, "/dir")
        batch.put_file(io.BytesIO(b"x" * (3 << 20)), "big/blob.bin")  # several chunks
        batch.put_file(str(local / "a.txt"), "top.txt")
    assert _tree(vol) == {"big": FileEntryType.DIRECTORY, "big/blob.bin": FileEntryType.FILE,
                          "dir": FileEntryType.DIRECTORY, "dir/a.txt": FileEntryType.FILE,
                          "dir/sub": FileEntryType.DIRECTORY,
                          "dir/sub/b.txt": FileEntryType.FILE, "top.txt": FileEntryType.FILE}
    assert [e.path for e in vol.listdir("dir")] == ["dir/a.txt", "dir/sub"]  # one level
    (entry,) = vol.listdir("big/blob.bin")  # a file's path lists that file
    assert entry.size == 3 << 20 and entry.type == FileEntryType.FILE
    assert b"".join(vol.read_file("dir/sub/b.txt")) == b"B"
    buf = io.BytesIO()
    assert vol.read_file_into_fileobj("big/blob.bin", buf) == 3 << 20
    assert buf.getvalue() == b"x" * (3 << 20)
    # no overwrite without force; force replaces
    with pytest.raises(FileExistsError, match="nothing was uploaded"):
        with vol.batch_upload() as batch:  # all or nothing: the new file is not written
            batch.put_file(io.BytesIO(b"fresh"), "fresh.txt")
            batch.put_file(io.BytesIO(b"new"), "top.txt")
    assert b"".join(vol.read_file("top.txt")) == b"A" and "fresh.txt" not in _tree(vol)
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"new"), "top.txt")
    assert b"".join(vol.read_file("top.txt")) == b"new"
    # copy with cp's rules
    vol.copy_files(["top.txt"], "dir")             # into a directory
    vol.copy_files(["top.txt"], "renamed.txt")     # to a new name
    with pytest.raises(modal.SandboxFileError, match="recursive=True"):
        vol.copy_files(["dir"], "dir2")
    vol.copy_files(["dir"], "dir2", recursive=True)
    assert b"".join(vol.read_file("dir/top.txt")) == b"new"
    assert b"".join(vol.read_file("dir2/sub/b.txt")) == b"B"
    assert b"".join(vol.read_file("renamed.txt")) == b"new"
    # remove
    with pytest.raises(modal.SandboxFileError, match="recursive=True"):
        vol.remove_file("dir2")
    vol.remove_file("dir2", recursive=True)
    vol.remove_file("renamed.txt")
    with pytest.raises(FileNotFoundError):
        vol.remove_file("renamed.txt")
    with pytest.raises(FileNotFoundError):
        b"".join(vol.read_file("nope.txt"))
    with pytest.raises(modal.InvalidRequestError, match=r"'\.\.'"):
        vol.listdir("../../etc")
    with pytest.raises(modal.InvalidRequestError, match="delete the whole"):
        vol.remove_file("/", recursive=True)
    assert "renamed.txt" not in _tree(vol) and "dir2" not in _tree(vol)
    modal.Volume.delete(name)
    with pytest.raises(NotFoundError):
        modal.Volume.from_name(name).listdir("/")


def test_ephemeral_volume_goes_with_its_block(server, api):
    with modal.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"tmp"), "t.txt")
        oid = vol.object_id
        assert b"".join(vol.read_file("t.txt")) == b"tmp"
    assert api.get(f"/v1/volumes/{oid}/files").status_code == 404


def test_a_hostile_tree_from_a_sandbox(server, tmp_path):
    """What code in a container leaves in a volume cannot make the API follow a link out,
    block on a FIFO, open a device, or delete outside the volume."""
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("host file")
    with modal.Volume.ephemeral() as vol:
        sb = modal.Sandbox.create(volumes={"/data": vol}, timeout=120)
        try:
            p = sb.exec("sh", "-c", f"""
                ln -s /etc/shadow /data/shadow; ln -s {canary} /data/out
                mkdir -p /data/d && ln -s {canary} /data/d/link && echo in > /data/d/f
                mknod /data/null c 1 3 2>/dev/null; echo mknod=$?""")
            assert p.wait() == 0, p.stderr.read()
            assert "mknod=1" in p.stdout.read()  # refused inside (and the fs is nodev)
        finally:
            sb.terminate()
        # gVisor keeps a FIFO made inside to itself: make one where a host process could
        (host,) = glob.glob(os.path.join(server.home, "volumes", "*", "fs", vol.object_id))
        os.mkfifo(os.path.join(host, "fifo"))
        tree = _tree(vol)
        assert tree["fifo"] == FileEntryType.UNSPECIFIED
        assert tree["shadow"] == FileEntryType.SYMLINK and tree["out"] == FileEntryType.SYMLINK
        assert "out/keep.txt" not in tree  # a recursive listing does not enter links
        with pytest.raises(modal.SandboxFileError, match="symlink"):
            b"".join(vol.read_file("shadow"))
        with pytest.raises(modal.SandboxFileError):
            b"".join(vol.read_file("out/keep.txt"))
        with pytest.raises(modal.SandboxFileError, match="special file"):
            b"".join(vol.read_file("fifo"))  # refused at once, not blocked
        with pytest.raises(FileExistsError):  # an upload through the link is no upload
            with vol.batch_upload() as batch:
                batch.put_file(io.BytesIO(b"x"), "out")
        with pytest.raises(modal.SandboxFileError):
            with vol.batch_upload(force=True) as batch:
                batch.put_file(io.BytesIO(b"x"), "out/planted.txt")
        vol.remove_file("d", recursive=True)  # removes the link, not what it points at
        vol.remove_file("out")
        assert (canary / "keep.txt").read_text() == "host file"
        assert not (canary / "planted.txt").exists()
        assert sorted(_tree(vol)) == ["fifo", "shadow"]


def test_functions_share_a_volume(server):
    modal.Volume.delete("fn-vol-test", allow_missing=True)
    with fntest.running(m.app):
        m.write.remote("notes/a.txt", "from one container")
        assert m.read.remote("notes/a.txt") == "from one container"
        # the client sees what containers wrote, and containers see what the client wrote
        assert b"".join(m.vol.read_file("notes/a.txt")) == b"from one container"
        with m.vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"from the client"), "client.txt")
        assert m.read.remote("client.txt") == "from the client"
        assert "client.txt" in m.Reader().names_at_start.remote()  # @app.cls, in @enter
        # four containers at once, each writing its own file
        assert len(list(m.writer.starmap([(w, 200) for w in range(4)]))) == 4
        for w in range(4):
            lines = b"".join(m.vol.read_file(f"own-{w}.txt")).decode().splitlines()
            assert lines == [f"{w}:{i}" for i in range(200)]
        assert sorted(e.path for e in m.vol.listdir("logs")) == [
            f"logs/{w}.done" for w in range(4)]
        code, listing = m.write_read_only.remote()
        assert code == "EROFS" and "client.txt" in listing
        assert "nope.txt" not in _tree(m.vol)
        paths, data = m.upload_from_inside.remote("fn-vol-test")
        assert paths == ["inside/hello.txt"] and data == b"from inside"


def test_quota_enospc_inside_and_typed_outside(server, api):
    vol = modal.Volume.from_name("fn-vol-test", create_if_missing=True)
    quota = api.get(f"/v1/volumes/{vol.hydrate().object_id}/usage").json()
    assert quota["enforced"] and 200 << 20 < quota["quota_bytes"] <= 256 << 20
    with fntest.running(m.app):
        err, written = m.fill.remote()
        assert err == "ENOSPC" and written > 100 << 20, (err, written)
        assert m.read.remote("after-fill.txt") == "still writable"  # the container lived on
    with pytest.raises(StorageFullError, match="SBX_VOLUME_QUOTA_MIB"):
        with vol.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"\0" * (300 << 20)), "too-big.bin")
    assert isinstance(StorageFullError("x"), OSError)
    assert "too-big.bin" not in _tree(vol)  # a failed upload leaves nothing
    assert api.get(f"/v1/volumes/{vol.object_id}/usage").json()["used_bytes"] < 100 << 20


def test_volumes_are_per_principal(server, api):
    name = _name("mine")
    vol = modal.Volume.from_name(name, create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"secret"), "s.txt")
    token = api.post("/v1/tokens", json={"scope": "user", "principal": "mallory"}).json()["token"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/v1/volumes/lookup", json={"name": name}).status_code == 404
        assert c.get(f"/v1/volumes/{vol.object_id}/file",
                     params={"path": "s.txt"}).status_code == 404
        r = c.post("/v1/sandboxes", json={"volumes": [{"volume_id": vol.object_id,
                                                        "path": "/data"}]})
        assert r.status_code == 404, r.text
        theirs = c.post("/v1/volumes/lookup", json={"name": name, "create_if_missing": True})
        assert c.get(f"/v1/volumes/{theirs.json()['object_id']}/files").json() == {
            "entries": [], "truncated": False}
    modal.Volume.delete(name)


def test_a_mounted_volume_across_server_restarts(server):
    """A sandbox keeps its volume while the server restarts (killed, then stopped): the
    restarted server mounts the same filesystem again, never a second copy of it."""
    with modal.Volume.ephemeral() as vol:
        sb = modal.Sandbox.create(volumes={"/data": vol}, timeout=300)
        try:
            for kill in (True, False):
                server.restart(kill=kill)
                with vol.batch_upload(force=True) as batch:
                    batch.put_file(io.BytesIO(f"kill={kill}".encode()), "after.txt")
                p = sb.exec("sh", "-c", "cat /data/after.txt; echo inside > /data/in.txt")
                assert p.stdout.read() == f"kill={kill}" and p.wait() == 0
                assert b"".join(vol.read_file("in.txt")) == b"inside\n"
                imgs = []
                for bf in os.listdir("/sys/block"):
                    try:
                        with open(f"/sys/block/{bf}/loop/backing_file") as f:
                            imgs.append(f.read().strip())
                    except OSError:
                        pass
                mine = [i for i in imgs if i.startswith(os.path.join(server.home, "volumes"))]
                assert mine and len(mine) == len(set(mine)), mine  # each image attached once
        finally:
            sb.terminate()
