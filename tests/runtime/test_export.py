"""A sandbox's filesystem changes as a layer diff on the host (runtimes/_export.py), with
real gVisor sandboxes; and the extractor against hostile tar streams."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile

import pytest

from runtimes import ContainerSpec, ExecSpec, ExitFrame
from runtimes._agent_client import AgentClient, read_frame
from runtimes._export import (
    ExportError,
    diff_manifests,
    export_changes,
    extract_tar,
    rootfs_manifest,
    sandbox_manifest,
)
from runtimes.agent.sbxagent import proto
from runtimes.gvisor import GVisorRuntime
from sandbox_service.wire._ids import new_id

NS = 1_700_000_000_123_456_789  # an mtime with a nanosecond part


@pytest.fixture(scope="module")
def rootfs(server, tmp_path_factory):
    """A private copy of the base image (hard links: never modify an existing file in
    it) plus /exp, whose entries have mtimes with nanosecond parts."""
    base = glob.glob(os.path.join(server.home, "images", "im-*", "rootfs"))[0]
    root = str(tmp_path_factory.mktemp("exp") / "rootfs")
    subprocess.run(["cp", "-al", base, root], check=True)
    exp = os.path.join(root, "exp")
    os.makedirs(os.path.join(exp, "gone-dir", "sub"))
    for rel, data in [("f", b"hello"), ("keep", b"unchanged"), ("edit", b"old content"),
                      ("chmod-me", b"same"), ("rm-me", b"bye"), ("gone-dir/a", b"a"),
                      ("gone-dir/sub/b", b"b"), ("to-link", b"will be a symlink")]:
        with open(os.path.join(exp, rel), "wb") as f:
            f.write(data)
        os.utime(os.path.join(exp, rel), ns=(NS, NS))
    os.symlink("f", os.path.join(exp, "l"))
    os.utime(os.path.join(exp, "l"), ns=(NS, NS + 1), follow_symlinks=False)
    for d in ("gone-dir/sub", "gone-dir", ""):
        os.utime(os.path.join(exp, d), ns=(NS, NS + 2))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def runtime(module_runtime):
    return module_runtime  # one runtime for the module (tests/runtime/conftest.py)


class Box:
    def __init__(self, rt: GVisorRuntime, cid: str):
        self.rt, self.cid = rt, cid
        self.agent = AgentClient(rt._socket(cid))

    async def sh(self, script: str, *argv: str) -> bytes:
        stream = await self.rt.exec(self.cid, ExecSpec(["sh", "-c", script, "sh", *argv]))
        out, err, code = b"", b"", None
        async for ev in stream.events():
            if isinstance(ev, ExitFrame):
                code = ev.exit_code
            elif ev[0] == "stdout":
                out += ev[1]
            else:
                err += ev[1]
        await stream.close()
        assert code == 0, err
        return out


@pytest.fixture
async def box(runtime, rootfs):
    cid = new_id("sandbox")
    await runtime.create(ContainerSpec(cid, rootfs, memory_mib=512))
    try:
        yield Box(runtime, cid)
    finally:
        await runtime.destroy(cid)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _dest(tmp_path, name="dest"):
    d = tmp_path / name
    d.mkdir()
    return str(d)


# ---- real sandboxes ---------------------------------------------------------------------

async def test_untouched_sandbox_matches_the_image_to_the_nanosecond(box, rootfs):
    binds = box.rt._bind_targets(box.cid)
    assert binds == ["/etc/hosts"]  # the sandbox's own, bound from the host
    base = await asyncio.to_thread(rootfs_manifest, rootfs, binds)
    full, unreadable = await sandbox_manifest(box.agent, exclude=binds)
    assert unreadable == []
    # what gVisor shows of an untouched image file is the host's lstat, ns included
    for p in ("/exp/f", "/exp/l", "/exp", "/etc/passwd", "/usr/bin/python3"):
        assert full[p] == base[p], p
    assert full["/exp/f"][5] == NS and full["/exp/l"][6] == "f"
    # the agent's mounts are not walked; /tmp (a tmpfs) is
    assert not [p for p in full if p.split("/")[1] in ("proc", "sys", "dev", ".sbx")]
    assert "/" not in full and "/tmp" in full
    assert diff_manifests(base, full) == (["/tmp"], [], [])
    # the pruned walk enters only directories that differ from the image's
    pruned, _ = await sandbox_manifest(box.agent, base)
    assert len(pruned) < 100 < len(full)
    assert diff_manifests(base, pruned, pruned=True) == (["/tmp"], [], [])


@pytest.mark.parametrize("prune", [True, False])
async def test_changes_round_trip(box, rootfs, tmp_path, prune):
    await box.sh(r"""set -e
        cd /exp
        echo new > new-file
        printf 'new content' > edit
        chmod 600 chmod-me
        rm rm-me
        rm -r gone-dir
        ln -s /etc/passwd new-link
        rm to-link && ln -s f to-link
        mkdir -p new-dir/a/b && echo deep > new-dir/a/b/c && echo top > new-dir/t
        chmod 750 new-dir/a
        echo suid > suid && chmod 4755 suid
        mkdir sgid-dir && chmod 2775 sgid-dir
        echo owned > owned && chown 1234:5678 owned
        echo linked > hard1 && ln hard1 hard2
        chmod 4755 /usr/bin/env
        mkdir /tmp/t && echo tmp > /tmp/t/x
        """)
    await box.sh("python3 -c \"open(b'/exp/\\xff\\xfe', 'w').write('latin')\"")
    dest = _dest(tmp_path)
    res = await export_changes(box.agent, rootfs, dest, prune=prune)
    assert res.deleted == ["/exp/gone-dir", "/exp/rm-me"]
    assert res.skipped == []

    def read(rel):
        return _read(os.path.join(dest, rel))

    def mode(rel):
        return stat.S_IMODE(os.lstat(os.path.join(dest, rel)).st_mode)

    assert read("exp/new-file") == b"new\n"
    assert read("exp/edit") == b"new content"
    assert read("exp/chmod-me") == b"same" and mode("exp/chmod-me") == 0o600
    assert os.readlink(os.path.join(dest, "exp/new-link")) == "/etc/passwd"
    assert os.readlink(os.path.join(dest, "exp/to-link")) == "f"
    assert read("exp/new-dir/a/b/c") == b"deep\n" and read("exp/new-dir/t") == b"top\n"
    assert mode("exp/new-dir/a") == 0o750
    assert read("tmp/t/x") == b"tmp\n"
    assert read(os.fsdecode(b"exp/\xff\xfe")) == b"latin"
    # setuid/setgid never reach the host
    assert mode("exp/suid") == 0o755 and mode("usr/bin/env") == 0o755
    assert mode("exp/sgid-dir") == 0o775
    st = os.lstat(os.path.join(dest, "exp/owned"))
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    # hard links arrive as separate regular files
    a, b = os.lstat(os.path.join(dest, "exp/hard1")), os.lstat(os.path.join(dest, "exp/hard2"))
    assert a.st_ino != b.st_ino and read("exp/hard2") == b"linked\n"
    # unchanged entries are not exported (ancestors of changes are, as directories)
    for rel in ("exp/keep", "exp/f", "exp/l", "etc/passwd", "usr/bin/python3"):
        assert not os.path.lexists(os.path.join(dest, rel)), rel
    assert os.path.isdir(os.path.join(dest, "usr/bin"))
    # metadata as the sandbox has it, mtime to the nanosecond
    inside = await sandbox_manifest(box.agent)
    for rel in ("exp/chmod-me", "exp/edit", "exp/to-link", "exp/new-dir/a", "exp"):
        rec = inside[0]["/" + rel]
        st = os.lstat(os.path.join(dest, rel))
        assert st.st_mtime_ns == rec[5], rel
    assert inside[0]["/exp/chmod-me"][5] == NS  # a chmod copy-up keeps the mtime
    files = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs]
    assert res.changed >= len(files)
    regular = [os.lstat(f) for f in files]
    assert res.bytes == sum(st.st_size for st in regular if stat.S_ISREG(st.st_mode))


async def test_untouched_sandbox_exports_only_tmp(box, rootfs, tmp_path):
    dest = _dest(tmp_path)
    res = await export_changes(box.agent, rootfs, dest)
    assert (res.deleted, res.changed, res.bytes) == ([], 1, 0)
    assert os.listdir(dest) == ["tmp"]


async def test_directory_replaced_by_a_file(box, rootfs, tmp_path):
    await box.sh("rm -r /exp/gone-dir && echo now-a-file > /exp/gone-dir")
    dest = _dest(tmp_path)
    res = await export_changes(box.agent, rootfs, dest)
    assert res.deleted == []  # the file hides the directory's contents
    assert _read(os.path.join(dest, "exp/gone-dir")) == b"now-a-file\n"


async def test_large_file_round_trip(box, rootfs, tmp_path):
    out = await box.sh("head -c 52428800 /dev/urandom > /big && sha256sum /big")
    dest = _dest(tmp_path)
    res = await export_changes(box.agent, rootfs, dest)
    assert _sha256(os.path.join(dest, "big")) == out.split()[0].decode()
    assert res.bytes == 50 << 20
    # cancelled mid-extraction: returns only once nothing writes into dest_dir any more
    dest2 = _dest(tmp_path, "dest2")
    task = asyncio.create_task(export_changes(box.agent, rootfs, dest2))
    for _ in range(2000):
        if os.path.exists(os.path.join(dest2, "big")) or task.done():
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    shutil.rmtree(dest2)
    await asyncio.sleep(0.2)
    assert not os.path.exists(dest2)
    assert (await box.agent.ping())["ok"]


async def test_too_large_is_refused(box, rootfs, tmp_path):
    await box.sh("head -c 3000000 /dev/zero > /big")
    with pytest.raises(ExportError, match="too large"):
        await export_changes(box.agent, rootfs, _dest(tmp_path), max_bytes=1 << 20)


async def test_bind_mounts_are_excluded(runtime, rootfs, tmp_path):
    host = tmp_path / "host-data"
    host.mkdir()
    (host / "secret").write_bytes(b"from the host")
    cid = new_id("sandbox")
    await runtime.create(ContainerSpec(cid, rootfs, mounts=((str(host), "/mnt/data"),)))
    try:
        b = Box(runtime, cid)
        await b.sh("echo mine > /mnt/mine")
        dest = _dest(tmp_path)
        res = await export_changes(b.agent, rootfs, dest, exclude=["/mnt/data/"])
        assert _read(os.path.join(dest, "mnt/mine")) == b"mine\n"
        assert not os.path.lexists(os.path.join(dest, "mnt/data"))
        assert res.deleted == []
        full, _ = await sandbox_manifest(b.agent)
        assert "/mnt/data/secret" in full  # what exclude is for
    finally:
        await runtime.destroy(cid)


async def test_the_runtime_leaves_hosts_and_volumes_out(runtime, rootfs, tmp_path):
    """runtime.export_changes (what snapshots call) excludes every host bind: the
    sandbox's /etc/hosts and a writable volume, edited or not."""
    vol = tmp_path / "vol"
    vol.mkdir()
    cid = new_id("sandbox")
    await runtime.create(ContainerSpec(cid, rootfs, volumes=((str(vol), "/data", False),)))
    try:
        b = Box(runtime, cid)
        await b.sh("echo 10.0.0.9 db >> /etc/hosts && echo kept > /data/v && echo x > /exp/new"
                   " && touch /etc/new-conf")
        assert (vol / "v").read_bytes() == b"kept\n"
        dest = _dest(tmp_path)
        res = await runtime.export_changes(cid, rootfs, dest)
        assert _read(os.path.join(dest, "exp/new")) == b"x\n"
        assert os.path.exists(os.path.join(dest, "etc/new-conf"))
        assert not os.path.lexists(os.path.join(dest, "etc/hosts"))
        assert not os.path.lexists(os.path.join(dest, "data"))
        assert res.deleted == []
    finally:
        await runtime.destroy(cid)


# ---- a hostile agent ------------------------------------------------------------------------

async def _fake_agent(path: str, manifest: bytes, tar: bytes, *, raw: bytes | None = None):
    """A stand-in for the agent on a Unix socket: answers fs_manifest with `manifest`
    (JSON lines) and fs_tar with `tar`, in small frames; `raw` replaces the manifest's
    frames with arbitrary bytes."""

    async def drain_lines(reader):
        while True:
            ftype, _ = await read_frame(reader)
            if ftype in (proto.EOF, None):
                return

    async def handle(reader, writer):
        _, payload = await read_frame(reader)
        req = json.loads(payload)
        if req["op"] == "fs_manifest":
            if req.get("base_dirs"):
                await drain_lines(reader)
            writer.write(proto.encode_json(proto.RESP, {"ok": True}))
            writer.write(raw if raw is not None else
                         proto.encode(proto.DATA, manifest) + proto.encode(proto.EOF))
        else:
            await drain_lines(reader)
            writer.write(proto.encode_json(proto.RESP, {"ok": True}))
            for i in range(0, len(tar), 1000):
                writer.write(proto.encode(proto.DATA, tar[i:i + 1000]))
            writer.write(proto.encode(proto.EOF))
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    return await asyncio.start_unix_server(handle, path)


def _rec(path, kind="f", size=1, target=None, mtime=NS):
    return json.dumps([path, kind, 0o644, 0, 0, size, mtime, target]).encode() + b"\n"


@pytest.fixture
def tiny_image(tmp_path):
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_bytes(b"root")
    st = os.lstat(root / "etc")
    etc = json.dumps(["/etc", "d", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                      st.st_mtime_ns, None]).encode() + b"\n"
    return str(root), etc


async def test_fake_agent_round_trip(tmp_path, tiny_image):
    root, etc = tiny_image
    manifest = etc + _rec("/etc/passwd", size=4, mtime=os.lstat(root + "/etc/passwd").st_mtime_ns)
    manifest += _rec("/new", size=300_000)
    data = _tar(F("new", os.urandom(300_000)))
    srv = await _fake_agent(str(tmp_path / "a.sock"), manifest, data)
    async with srv:
        dest = _dest(tmp_path)
        res = await export_changes(AgentClient(str(tmp_path / "a.sock")), root, dest)
    assert (res.changed, res.bytes, res.deleted) == (1, 300_000, [])


HOSTILE_AGENT = {  # case -> what the error says
    "dotdot-path": "bad manifest record: path", "nul-path": "bad manifest record: path",
    "lone-surrogate": "bad manifest record: path", "bad-shape": "bad manifest record: shape",
    "huge-frame": "4294967295-byte frame", "unrequested-member": "unrequested member",
    "dotdot-member": "bad member name",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_AGENT))
async def test_fake_agent_hostile(tmp_path, tiny_image, jail, case):
    root, etc = tiny_image
    dest, outside, _ = jail
    manifest, data, raw = etc + _rec("/new"), _tar(F("new")), None
    if case == "dotdot-path":
        manifest += _rec("/etc/../../outside/pwned")
    elif case == "nul-path":
        manifest += _rec("/etc/x\u0000y")
    elif case == "bad-shape":
        manifest += b'["/etc/x", "f", "0644"]\n'
    elif case == "lone-surrogate":
        manifest += _rec("/\ud800")
    elif case == "huge-frame":
        raw = proto.HEADER.pack(proto.DATA, 2**32 - 1)
    elif case == "unrequested-member":
        data = _tar(F("new"), F("etc/shadow"))
    elif case == "dotdot-member":
        data = _tar(F("new"), F("../outside/pwned"))
    srv = await _fake_agent(str(tmp_path / "a.sock"), manifest, data, raw=raw)
    async with srv:
        with pytest.raises(ExportError, match=re.escape(HOSTILE_AGENT[case])):
            await export_changes(AgentClient(str(tmp_path / "a.sock")), root, dest)
    assert not os.path.lexists(os.path.join(outside, "pwned"))


# ---- hostile tar streams ------------------------------------------------------------------

def _tar(*members: tuple) -> bytes:
    """Members: (tarinfo kwargs, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kw, data in members:
            ti = tarfile.TarInfo(kw.pop("name"))
            for k, v in kw.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def F(name, data=b"x", **kw):
    return dict(name=name, **kw), data


def D(name, **kw):
    return dict(name=name, type=tarfile.DIRTYPE, **{"mode": 0o755, **kw}), None


def L(name, target, **kw):
    return dict(name=name, type=tarfile.SYMTYPE, linkname=target, **kw), None


@pytest.fixture
def jail(tmp_path):
    """dest_dir inside a directory whose other contents must stay as they are."""
    top = tmp_path / "jail"
    outside = top / "outside"
    outside.mkdir(parents=True)
    (outside / "canary").write_bytes(b"canary")
    dest = top / "dest"
    dest.mkdir()

    def check_outside():
        assert sorted(os.listdir(top)) == ["dest", "outside"]
        assert os.listdir(outside) == ["canary"]
        assert (outside / "canary").read_bytes() == b"canary"

    yield str(dest), str(outside), check_outside
    check_outside()


async def _extract(data: bytes, dest: str, allowed, max_bytes: int = 1 << 30):
    return await extract_tar(io.BytesIO(data), dest, set(allowed), max_bytes)


async def test_extract_a_good_stream(jail):
    dest, _, _ = jail
    data = _tar(F("a/b/c", b"deep", mode=0o4755, mtime=NS / 1e9), D("a", mode=0o2700),
                L("a/l", "../../outside"), F("x", b""))
    written, total = await _extract(data, dest, ["/a/b/c", "/a", "/a/l", "/x"])
    assert (written, total) == (4, 4)
    assert stat.S_IMODE(os.lstat(os.path.join(dest, "a/b/c")).st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(os.path.join(dest, "a")).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(os.path.join(dest, "a/b")).st_mode) == 0o755  # implicit
    assert os.readlink(os.path.join(dest, "a/l")) == "../../outside"


async def test_extract_from_async_chunks(jail):
    dest, _, _ = jail
    data = _tar(F("f", os.urandom(300_000)))

    async def chunks():
        for i in range(0, len(data), 7000):
            yield data[i:i + 7000]

    assert await extract_tar(chunks(), dest, {"/f"}, 1 << 30) == (1, 300_000)


HOSTILE = {  # case -> what the error says
    "dotdot": "bad member name", "absolute": "bad member name", "dotdot-pax": "bad member name",
    "empty-component": "bad member name", "dot-component": "bad member name",
    "nul-in-name": "bad member name", "unrequested": "unrequested member", "duplicate": "twice",
    "hardlink": "hard link", "chardev": "of type b'3'", "fifo": "of type b'6'",
    "symlink-then-below": "below a symlink", "below-then-symlink": "entries below symlink",
    "symlink-to-root-then-through": "below a symlink", "oversize": "snapshot is too large",
    "gnu-longname": "not a POSIX", "bad-checksum": "bad checksum", "truncated": "ended early",
    "huge-pax": "pax header too large",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_extract_rejects_hostile_streams(jail, case):
    dest, outside, check_outside = jail
    rel_out = os.path.relpath(outside, dest)  # "../outside"
    allowed = {"/a", "/a/b", "/f", "/link", "/link/pwned", "/x"}
    max_bytes = 1 << 30
    if case == "dotdot":
        data = _tar(F(f"{rel_out}/pwned"))
        allowed.add("/" + f"{rel_out}/pwned")
    elif case == "absolute":
        data = _tar(F(f"{outside}/pwned"))
        allowed.add(f"{outside}/pwned")
    elif case == "dotdot-pax":
        data = _tar(F("f", pax_headers={"path": f"{rel_out}/pwned"}))
    elif case == "empty-component":
        data = _tar(F("a//b"))
    elif case == "dot-component":
        data = _tar(F("./f"))
    elif case == "unrequested":
        data = _tar(F("f"), F("etc/shadow"))
    elif case == "duplicate":
        data = _tar(F("f", b"one"), F("f", b"two"))
    elif case == "hardlink":
        data = _tar(F("f"), ({"name": "x", "type": tarfile.LNKTYPE, "linkname": "f"}, None))
    elif case == "chardev":
        data = _tar(({"name": "x", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 1}, None))
    elif case == "fifo":
        data = _tar(({"name": "x", "type": tarfile.FIFOTYPE}, None))
    elif case == "symlink-then-below":
        data = _tar(L("link", rel_out), F("link/pwned"))
    elif case == "below-then-symlink":
        data = _tar(F("link/pwned"), L("link", rel_out))
    elif case == "symlink-to-root-then-through":
        data = _tar(L("link", "/"), F("link/pwned"))
        allowed.add("/link/tmp")
    elif case == "oversize":
        data = _tar(F("f", b"x" * 600), F("x", b"y" * 600))
        max_bytes = 1000
    elif case == "gnu-longname":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
            ti = tarfile.TarInfo("a/" + "b" * 150)
            t.addfile(ti, io.BytesIO(b""))
        data = buf.getvalue()
    elif case == "bad-checksum":
        data = bytearray(_tar(F("f")))
        data[0] = ord("g")  # name "f" -> "g" without fixing the checksum
        data = bytes(data)
        allowed.add("/g")
    elif case == "truncated":
        data = _tar(F("f", b"z" * 5000))[:3000]
    elif case == "huge-pax":
        block = bytearray(tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT))
        block[156:157] = b"x"
        block[124:136] = b"%011o\x00" % (8**11 - 1)
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\x00 " % sum(block)
        data = bytes(block)
    elif case == "nul-in-name":
        data = _tar(F("f", pax_headers={"path": "f\x00/../../x"}))
    with pytest.raises(ExportError, match=re.escape(HOSTILE[case])):
        await _extract(data, dest, allowed, max_bytes)
    check_outside()
    assert not os.path.lexists(os.path.join(outside, "pwned"))


async def test_the_export_fails_without_writing_outside(jail):
    """Even a partial extraction before the rejection stays inside dest_dir."""
    dest, _, _ = jail
    data = _tar(F("a/ok"), L("a/l", "/"), F("a/l/tmp/pwned"))
    with pytest.raises(ExportError):
        await _extract(data, dest, ["/a/ok", "/a/l", "/a/l/tmp/pwned"])
    assert not os.path.exists("/tmp/pwned")
    assert os.listdir(os.path.join(dest, "a")) == ["ok"]
