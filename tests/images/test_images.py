"""Tests of the images layer: the real base-image build (once per module) and the store.

The one real build uses debootstrap (~1 min), or the `SBX_IMAGE_CACHE` tarball when that is
set in the environment (CI). Everything else is fast: either it reuses that build or it
replaces debootstrap with a tiny fake tree.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time

import pytest

import images
from images import BASE_IMAGE_NAME, BuiltImage, ImageBuildError, ImageStore
from images import _debootstrap, _mirror, _model, _store

MOUNT_POINTS = ["/tmp", "/root", "/dev", "/proc", "/sys", "/.sbx/agent", "/.sbx/run"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The base image, really built (or restored from $SBX_IMAGE_CACHE) once."""
    images_dir = tmp_path_factory.mktemp("images")
    store = ImageStore(str(images_dir), cache_dir=os.environ.get("SBX_IMAGE_CACHE"))
    lines: list[str] = []
    image = asyncio.run(store.ensure_base(progress=lines.append))
    yield store, image, lines
    shutil.rmtree(images_dir, ignore_errors=True)


def _walk_lstat(root: str):
    root_dev = os.lstat(root).st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if os.lstat(os.path.join(dirpath, d)).st_dev == root_dev]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            yield p, os.lstat(p)


# -- the real build ----------------------------------------------------------------------

def test_api_exports():
    """The images front door: what the server and the SDK use, every name resolvable."""
    assert sorted(images.__all__) == [
        "BASE_IMAGE_NAME", "BuildSettings", "Builder", "BuiltImage", "Cmd", "Copy", "Diff",
        "DockerfileError", "Entrypoint", "Env", "From", "ImageBuildError", "ImageStore",
        "LayerStore", "Run", "User", "Workdir", "empty_config", "parse_dockerfile",
        "resolve_user", "user_home"]
    for name in images.__all__:
        assert getattr(images, name) is not None
    assert BASE_IMAGE_NAME == "debian_slim"


def test_base_image_record(built):
    store, image, lines = built
    assert isinstance(image, BuiltImage)
    assert image.image_id.startswith("im-") and len(image.image_id) == 23
    assert image.digest.startswith("sha256:") and len(image.digest) == 7 + 64
    assert image.image_id == "im-" + image.digest[7:27]
    assert image.rootfs == os.path.join(store.images_dir, image.image_id, "rootfs")
    assert os.path.isabs(image.rootfs)
    assert image.python == "/usr/bin/python3"
    assert image.size_bytes > 50_000_000
    assert os.path.isfile(os.path.join(store.images_dir, image.image_id, "image.json"))
    assert any(line.startswith("base image ready: " + image.image_id) for line in lines)
    assert not [n for n in os.listdir(store.images_dir) if n.startswith(".tmp-")]


def test_rootfs_is_clean(built):
    _, image, _ = built
    root = image.rootfs
    assert os.path.exists(os.path.join(root, "usr/bin/python3"))
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o755
    devices, setid = [], []
    for path, st in _walk_lstat(root):
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            devices.append(path)
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            setid.append(path)
    assert devices == []
    assert setid == []
    for mp in MOUNT_POINTS:
        assert stat.S_ISDIR(os.lstat(root + mp).st_mode), mp
    assert not [n for n in os.listdir(os.path.join(root, "var/cache/apt/archives"))
                if n.endswith(".deb")]
    lists = os.path.join(root, "var/lib/apt/lists")
    assert not os.path.exists(lists) or os.listdir(lists) == []


def test_get_and_list(built):
    store, image, _ = built
    assert store.get(image.image_id) == image
    assert store.get("im-00000000000000000000") is None
    assert store.get("../../etc") is None
    assert image in store.list()
    fresh = ImageStore(store.images_dir)
    assert fresh.get(image.image_id) == image
    assert [i.image_id for i in fresh.list()] == [image.image_id]


async def test_second_ensure_base_is_immediate(built):
    store, image, _ = built
    lines: list[str] = []
    t0 = time.monotonic()
    again = await store.ensure_base(progress=lines.append)
    assert time.monotonic() - t0 < 1.0
    assert again == image
    assert lines == []


async def test_concurrent_ensure_base_on_fresh_store(built):
    store, image, _ = built
    fresh = ImageStore(store.images_dir)
    a, b = await asyncio.gather(fresh.ensure_base(), fresh.ensure_base())
    assert a == b == image


def test_incomplete_dir_is_ignored(built):
    store, image, _ = built
    bogus = os.path.join(store.images_dir, "im-0123456789abcdef0123")
    os.makedirs(os.path.join(bogus, "rootfs"))
    try:
        assert store.get("im-0123456789abcdef0123") is None
        assert [i.image_id for i in store.list()] == [image.image_id]
    finally:
        shutil.rmtree(bogus)


async def test_bad_mirror_fails_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SBX_IMAGE_CACHE", raising=False)
    store = ImageStore(str(tmp_path / "images"), mirror="http://127.0.0.1:9/debian")
    lines: list[str] = []
    with pytest.raises(ImageBuildError) as info:
        await store.ensure_base(progress=lines.append)
    msg = str(info.value)
    assert "exit code" in msg and "127.0.0.1:9" in msg and "SBX_DEBIAN_MIRROR" in msg
    assert any(line.startswith("E:") for line in lines)
    left = os.listdir(store.images_dir)
    assert left and all(n.startswith(".lock-") for n in left), left
    assert store.list() == []


# -- fast tests with a fake debootstrap ----------------------------------------------------

def _fake_tree(root: str) -> None:
    """A few files shaped like a debootstrap target, including things to strip."""
    for d in ("usr/bin", "usr/lib", "dev", "etc", "var/cache/apt/archives",
              "var/lib/apt/lists/partial"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.symlink("usr/bin", os.path.join(root, "bin"))
    with open(os.path.join(root, "usr/bin/python3.11"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(root, "usr/bin/python3.11"), 0o755)
    os.symlink("python3.11", os.path.join(root, "usr/bin/python3"))
    with open(os.path.join(root, "usr/bin/su"), "w") as f:
        f.write("x" * 1000)
    os.chmod(os.path.join(root, "usr/bin/su"), 0o4755 | 0o2000)
    os.mknod(os.path.join(root, "dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(os.path.join(root, "dev/loop0"), 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    open(os.path.join(root, "var/cache/apt/archives/x.deb"), "w").close()
    open(os.path.join(root, "var/lib/apt/lists/deb.debian.org_Release"), "w").close()
    os.symlink("/etc/hostname-on-host", os.path.join(root, "root"))  # replaced by a dir


@pytest.fixture
def fake_debootstrap(monkeypatch):
    calls: list[str] = []

    async def fake(recipe, target, mirror, emit):
        calls.append(mirror)
        emit("I: fake debootstrap")
        await asyncio.sleep(0.05)
        await asyncio.to_thread(_fake_tree, target)

    monkeypatch.setattr(_store, "run_debootstrap", fake)
    monkeypatch.delenv("SBX_IMAGE_CACHE", raising=False)
    return calls


async def test_fake_build_strips_and_builds_once(tmp_path, fake_debootstrap):
    store = ImageStore(str(tmp_path), mirror="http://mirror.example/debian")
    results = await asyncio.gather(*(store.ensure_base() for _ in range(4)))
    assert fake_debootstrap == ["http://mirror.example/debian"]
    image = results[0]
    assert all(r == image for r in results)
    root = image.rootfs
    assert image.python == "/usr/bin/python3"
    assert not os.path.lexists(os.path.join(root, "dev/null"))
    assert not os.path.lexists(os.path.join(root, "dev/loop0"))
    assert stat.S_IMODE(os.stat(os.path.join(root, "usr/bin/su")).st_mode) == 0o755
    assert not os.path.exists(os.path.join(root, "var/cache/apt/archives/x.deb"))
    assert os.listdir(os.path.join(root, "var/lib/apt/lists")) == []
    for mp in MOUNT_POINTS:
        assert stat.S_ISDIR(os.lstat(root + mp).st_mode), mp
    assert stat.S_IMODE(os.lstat(root + "/tmp").st_mode) == 0o1777
    assert image.size_bytes >= 1000
    assert store.list() == [image]


async def test_cancelled_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SBX_IMAGE_CACHE", raising=False)
    started = asyncio.Event()

    async def slow(recipe, target, mirror, emit):
        os.makedirs(os.path.join(target, "usr"))
        started.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(_store, "run_debootstrap", slow)
    store = ImageStore(str(tmp_path))
    task = asyncio.create_task(store.ensure_base())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(n.startswith(".lock-") for n in os.listdir(tmp_path))


async def test_stale_tmp_and_incomplete_dirs_are_cleaned(tmp_path, fake_debootstrap):
    store = ImageStore(str(tmp_path))
    image_id = _model.image_id_for(_model.recipe_digest(_model.base_recipe()))
    os.makedirs(tmp_path / image_id / "rootfs")            # incomplete: no image.json
    os.makedirs(tmp_path / ".tmp-old" / "rootfs")
    os.makedirs(tmp_path / ".tmp-recent")
    old = time.time() - 2 * 3600
    os.utime(tmp_path / ".tmp-old", (old, old))
    image = await store.ensure_base()
    assert image.image_id == image_id
    names = set(os.listdir(tmp_path))
    assert ".tmp-old" not in names and ".tmp-recent" in names


async def test_cache_roundtrip(tmp_path, fake_debootstrap, monkeypatch):
    cache = tmp_path / "cache"
    first = await ImageStore(str(tmp_path / "a"), cache_dir=str(cache)).ensure_base()
    assert sorted(os.listdir(cache)) == [first.image_id + ".json", first.image_id + ".tar"]
    assert len(fake_debootstrap) == 1
    lines: list[str] = []
    second = await ImageStore(str(tmp_path / "b"), cache_dir=str(cache)).ensure_base(
        progress=lines.append)
    assert len(fake_debootstrap) == 1                      # unpacked, not rebuilt
    assert second.image_id == first.image_id and second.digest == first.digest
    assert second.python == "/usr/bin/python3"
    assert any("cache" in line for line in lines)
    # A cache entry whose json does not match the digest is ignored.
    (cache / (first.image_id + ".json")).write_text('{"digest": "sha256:00", "recipe": {}}')
    await ImageStore(str(tmp_path / "c"), cache_dir=str(cache)).ensure_base()
    assert len(fake_debootstrap) == 2


# -- recipe, mirror and prerequisites ------------------------------------------------------

def test_digest_ignores_mirror_and_is_stable():
    r = _model.base_recipe("bookworm")
    assert r == {"kind": "debootstrap", "suite": "bookworm", "variant": "minbase",
                 "include": ["ca-certificates", "python-is-python3", "python3", "python3-pip"], "strip": 1}
    assert _model.recipe_digest(r) == _model.recipe_digest(dict(reversed(list(r.items()))))
    assert _model.recipe_digest(r) != _model.recipe_digest(_model.base_recipe("trixie"))


def test_mirror_resolution(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert _mirror.resolve_mirror(None, "bookworm", apt_dir=str(apt)) == \
        "http://deb.debian.org/debian"
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# comment\nURIs: http://sec.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://m.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert _mirror.resolve_mirror(None, "bookworm", apt_dir=str(apt)) == \
        "http://m.example/debian"
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://classic.example/debian bookworm main\n")
    assert _mirror.resolve_mirror(None, "bookworm", apt_dir=str(apt)) == \
        "http://classic.example/debian"
    assert _mirror.resolve_mirror(None, "trixie", apt_dir=str(apt)) == \
        "http://deb.debian.org/debian"
    # SBX_DEBIAN_MIRROR reaches here as the explicit mirror (tests/server/test_settings.py)
    assert _mirror.resolve_mirror("http://arg.example/d", "bookworm", apt_dir=str(apt)) == \
        "http://arg.example/d"


async def test_missing_debootstrap_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("SBX_IMAGE_CACHE", raising=False)
    monkeypatch.setattr(_debootstrap.shutil, "which", lambda *a, **k: None)
    store = ImageStore(str(tmp_path))
    with pytest.raises(ImageBuildError, match="apt-get install debootstrap"):
        await store.ensure_base()
    assert all(n.startswith(".lock-") for n in os.listdir(tmp_path))
