"""The images layer's building blocks on their own (no server): the layer store's locking
and recovery, overlay upper conversion, cache keys, registry host checks, Dockerfile COPY
confinement, config folding."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from images._layers import Diff, LayerStore, overlay_upper_to_diff
from images._model import ImageBuildError
from images._registry_layer import check_host
from images._steps import layer_key

pytestmark = pytest.mark.fast


async def _write_root(tmp: str) -> Diff:
    root = os.path.join(tmp, "rootfs")
    os.makedirs(os.path.join(root, "etc"))
    with open(os.path.join(root, "etc", "marker"), "w") as f:
        f.write(os.path.basename(tmp))
    return Diff(rootfs_made=True)


async def test_a_failed_build_hands_over_to_one_waiter_only(tmp_path):
    store = LayerStore(str(tmp_path / "layers"))
    started = []
    gate = asyncio.Event()

    async def failing(tmp):
        started.append("fail")
        await gate.wait()
        raise ImageBuildError("boom")

    async def slow(tmp):
        started.append("ok")
        await asyncio.sleep(0.2)
        return await _write_root(tmp)

    first = asyncio.create_task(store.ensure("k1", None, failing, what="x", emit=print))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(store.ensure("k1", None, slow, what="x", emit=print))
    await asyncio.sleep(0.05)
    gate.set()
    with pytest.raises(ImageBuildError):
        await first
    await asyncio.sleep(0.05)  # the second now builds, holding the same lock
    third = asyncio.create_task(store.ensure("k1", None, slow, what="x", emit=print))
    (layer2, made2), (layer3, made3) = await second, await third
    assert started == ["fail", "ok"]  # the third waited instead of building again
    assert (made2, made3) == (True, False)
    assert layer2.path == layer3.path and store.get("k1") is not None
    assert not [n for n in os.listdir(store.dir) if n.startswith(".tmp-")]


async def test_a_layer_made_meanwhile_is_never_replaced(tmp_path):
    store = LayerStore(str(tmp_path / "layers"))
    layer, _ = await store.ensure("k2", None, _write_root, what="x", emit=print)
    inode = os.stat(os.path.join(layer.rootfs, "etc", "marker")).st_ino
    # another producer finishing late (as after a lost lock) must not replace it
    again = await store._make("k2", None, _write_root, "x")
    assert again.path == layer.path
    assert os.stat(os.path.join(layer.rootfs, "etc", "marker")).st_ino == inode


def test_overlay_upper_keeps_dot_directories(tmp_path):
    upper = tmp_path / "upper"
    (upper / ".venv" / "lib").mkdir(parents=True)
    os.mknod(upper / ".venv" / "lib" / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    os.mknod(upper / "top-gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    diff = overlay_upper_to_diff(str(upper))
    assert sorted(diff.deleted) == ["/.venv/lib/gone", "/top-gone"]
    assert not (upper / ".venv" / "lib" / "gone").exists()


def test_secret_values_change_the_key_without_appearing_in_it():
    step = {"kind": "run", "commands": ["true"], "secret_env": {"TOKEN": "a"}}
    other = {**step, "secret_env": {"TOKEN": "b"}}
    k = layer_key("p", step, {}, secret_key=b"k" * 32)
    assert k == layer_key("p", step, {}, secret_key=b"k" * 32)
    assert k != layer_key("p", other, {}, secret_key=b"k" * 32)
    assert k != layer_key("p", step, {}, secret_key=b"x" * 32)


@pytest.mark.parametrize("domain", ["localhost:5000", "LOCALHOST:5000", "[::1]", "[::1]:5000",
                                    "[::ffff:7f00:1]:5000", "10.1.2.3:5000", "169.254.169.254",
                                    "foo.localhost", "127.0.0.1"])
async def test_private_registry_hosts_are_refused(domain):
    with pytest.raises(ImageBuildError, match="SBX_PRIVATE_REGISTRIES"):
        await check_host(domain, frozenset())


async def test_allowed_private_registries_and_public_ones():
    assert await check_host("127.0.0.1:5000", frozenset({"127.0.0.1:*"})) is True
    assert await check_host("203.0.113.7:443", frozenset()) is False
    # the host's own address is the host, whatever range it is in
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("203.0.113.7", 9))
        own = s.getsockname()[0]
    with pytest.raises(ImageBuildError):
        await check_host(f"{own}:5000", frozenset())


def test_dockerfile_copy_cannot_follow_a_symlink_out_of_the_context(tmp_path):
    from sandbox_service import InvalidRequestError
    from images._dockerfile import Copy
    from sandbox_service._dockerfile_apply import _copy_adds

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("secret")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "keys").symlink_to(outside)
    (ctx / "ok.txt").write_text("fine")
    with pytest.raises(InvalidRequestError, match="outside the build context"):
        _copy_adds(Copy(["keys/id_rsa"], "/x", None, None, False, line=3), str(ctx), ())
    with pytest.raises(InvalidRequestError, match="outside the build context"):
        _copy_adds(Copy(["keys"], "/x/", None, None, False, line=4), str(ctx), ())
    assert [a.remote for a in _copy_adds(Copy(["ok.txt"], "/x/", None, None, False, line=5),
                                         str(ctx), ())] == ["/x/ok.txt"]


def test_per_principal_quotas():
    from security import ResourcePolicy

    p = ResourcePolicy(max_sandboxes_per_principal=2, creates_per_minute=3)
    recent: list[float] = []
    assert p.admit_create("alice", 0, recent, 100.0) is None
    assert "limit per principal is 2" in p.admit_create("alice", 2, recent, 101.0)
    assert p.admit_create("alice", 1, recent, 102.0) is None
    assert p.admit_create("alice", 1, recent, 103.0) is None
    assert "retry in 57s" in p.admit_create("alice", 1, recent, 103.0)
    assert p.admit_create("alice", 1, recent, 161.0) is None  # the oldest aged out
    assert p.admit_create("admin", 10_000, [], 0.0) is None   # the operator is not limited


def test_a_function_steps_key_is_its_source_hash_not_its_files():
    step = {"kind": "function", "module": "m", "qualname": "f", "source_sha256": "a" * 64,
            "args_b64": "", "entries": [{"path": "/m.py", "sha256": "b" * 64}],
            "sdk_dirs": ["/x", "/y"]}
    ctx = {"env": {}, "workdir": None, "user": None}
    key = layer_key("p", step, ctx)
    assert layer_key("p", {**step, "entries": [{"path": "/m.py", "sha256": "c" * 64}],
                           "sdk_dirs": ["/z", "/w"]}, ctx) == key
    assert layer_key("p", {**step, "source_sha256": "d" * 64}, ctx) != key
    assert layer_key("p", {**step, "args_b64": "eA=="}, ctx) != key
    # a files step's entries are its content: they stay in its key
    files = {"kind": "files", "entries": step["entries"]}
    assert layer_key("p", files, ctx) != layer_key("p", {**files, "entries": []}, ctx)
