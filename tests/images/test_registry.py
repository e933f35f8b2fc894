"""images._registry against a real docker-registry on loopback, with the real skopeo and
umoci (no mocks): round trips, layers and whiteouts, stripping, credentials, TLS, errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import platform
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time

import pytest
from registry import (
    Registry,
    busybox_rootfs,
    free_port,
    push_multiarch,
    push_rootfs,
    start_registry,
)

from images._model import ImageBuildError
from images._registry import (
    PulledImage,
    RegistryError,
    inspect_digest,
    parse_reference,
    pull,
)

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("skopeo", "umoci", "docker-registry")),
    reason="needs skopeo, umoci and docker-registry (apt-get install skopeo umoci docker-registry)")

BAD_REFS = ["-rf", "a b", "x;rm", "", "$(id)", "repo:tag\n", "UPPER/case", "x@sha256:1234",
            "--help", "a|b", "../etc", "host:5000/", "x:bad tag"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory):
    reg = start_registry(str(tmp_path_factory.mktemp("plain-registry")))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    reg = start_registry(str(tmp_path_factory.mktemp("secured-registry")), auth=True, tls=True)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def busybox(plain: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = busybox_rootfs(str(tmp_path_factory.mktemp("bb") / "rootfs"))
    digest = push_rootfs(plain, root, "sbx/busybox:1", env={"GREETING": "hi", "PATH": "/bin"},
                         entrypoint=["/bin/sh", "-c"], cmd=["echo hello"], workdir="/work",
                         user="app")
    return f"{plain.host}/sbx/busybox:1", digest


def _layer_members(ref: str, tmp: str, *, auth: tuple[str, str] | None = None) -> list[list[tarfile.TarInfo]]:
    """The tar entries of each layer of `ref` as stored in the registry (checks the setup)."""
    creds = ["--src-creds", f"{auth[0]}:{auth[1]}"] if auth else []
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                    *creds, f"docker://{ref}", "oci:oci:latest"], cwd=tmp, check=True, timeout=60)
    blobs = os.path.join(tmp, "oci", "blobs", "sha256")
    with open(os.path.join(tmp, "oci", "index.json")) as f:
        manifest_digest = json.load(f)["manifests"][0]["digest"].split(":")[1]
    with open(os.path.join(blobs, manifest_digest)) as f:
        manifest = json.load(f)
    layers = []
    for layer in manifest["layers"]:
        with tarfile.open(os.path.join(blobs, layer["digest"].split(":")[1])) as tar:
            layers.append(tar.getmembers())
    return layers


def test_parse_reference_normalises() -> None:
    digest = "sha256:" + "ab" * 32
    assert parse_reference("python:3.11-slim") == "docker.io/library/python:3.11-slim"
    assert parse_reference("ubuntu") == "docker.io/library/ubuntu:latest"
    assert parse_reference("owner/repo") == "docker.io/owner/repo:latest"
    assert parse_reference("index.docker.io/library/debian:12") == "docker.io/library/debian:12"
    assert parse_reference("127.0.0.1:5000/repo/x:tag") == "127.0.0.1:5000/repo/x:tag"
    assert parse_reference("localhost/x") == "localhost/x:latest"
    assert parse_reference(f"ghcr.io/a/b@{digest}") == f"ghcr.io/a/b@{digest}"
    assert parse_reference(f"ghcr.io/a/b:v1@{digest}") == f"ghcr.io/a/b@{digest}"


@pytest.mark.parametrize("ref", BAD_REFS)
async def test_malformed_references_run_nothing(ref: str, tmp_path, monkeypatch) -> None:
    started: list[object] = []
    real = asyncio.create_subprocess_exec

    async def spy(*argv, **kw):
        started.append(argv)
        return await real(*argv, **kw)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    with pytest.raises(RegistryError, match="invalid image reference"):
        parse_reference(ref)
    with pytest.raises(RegistryError):
        await pull(ref, str(tmp_path / "img"))
    with pytest.raises(RegistryError):
        await inspect_digest(ref)
    assert started == [] and not (tmp_path / "img").exists()


async def test_pull_round_trip(busybox: tuple[str, str], tmp_path) -> None:
    ref, digest = busybox
    lines: list[str] = []
    img = await pull(ref, str(tmp_path / "img"), insecure=True, progress=lines.append)
    assert isinstance(img, PulledImage) and img.digest == digest
    assert img.rootfs == str(tmp_path / "img" / "rootfs")
    assert os.listdir(tmp_path / "img") == ["rootfs"]          # layout and leftovers gone
    busybox_bin = os.path.join(img.rootfs, "bin", "busybox")
    assert stat.S_ISREG(os.lstat(busybox_bin).st_mode) and os.access(busybox_bin, os.X_OK)
    assert os.readlink(os.path.join(img.rootfs, "bin", "sh")) == "busybox"
    assert "app:x:1000" in (tmp_path / "img" / "rootfs" / "etc" / "passwd").read_text()
    assert os.path.isdir(os.path.join(img.rootfs, ".sbx", "agent"))  # finalize_rootfs ran
    assert img.env == {"GREETING": "hi", "PATH": "/bin"}
    assert (img.entrypoint, img.cmd) == (["/bin/sh", "-c"], ["echo hello"])
    assert (img.workdir, img.user) == ("/work", "app")
    assert lines[0] == f"pulling {ref}" and "unpacking" in lines
    assert lines[-1].startswith(f"pulled {ref.rsplit(':', 1)[0]}@{digest} (")


async def test_inspect_digest_matches_push_and_pull_by_digest(busybox, plain, tmp_path) -> None:
    ref, digest = busybox
    assert await inspect_digest(ref, insecure=True) == digest
    pinned = f"{plain.host}/sbx/busybox@{digest}"
    assert await inspect_digest(pinned, insecure=True) == digest
    img = await pull(pinned, str(tmp_path / "img"), insecure=True)
    assert img.digest == digest and img.user == "app"


async def test_multi_layer_overwrite_and_whiteout(plain: Registry, tmp_path) -> None:
    root = busybox_rootfs(str(tmp_path / "base"))
    (tmp_path / "base" / "data" / "olddir").mkdir(parents=True)
    for name, text in (("etc/motd", "old"), ("etc/gone", "bye"), ("data/olddir/f", "x")):
        (tmp_path / "base" / name).write_text(text)
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "data").mkdir()
    (layer / "etc" / "motd").write_text("new")
    (layer / "etc" / "added").write_text("added")
    (layer / "etc" / ".wh.gone").write_text("")
    (layer / "data" / ".wh.olddir").write_text("")
    digest = push_rootfs(plain, root, "sbx/layers:1", layers=[str(layer)])
    ref = f"{plain.host}/sbx/layers:1"
    layers = _layer_members(ref, str(tmp_path))
    assert len(layers) == 2 and any(m.name.endswith("etc/.wh.gone") for m in layers[1])
    img = await pull(ref, str(tmp_path / "img"), insecure=True)
    etc = pathlib.Path(img.rootfs, "etc")
    assert img.digest == digest and img.entrypoint is None and img.workdir is None
    assert (etc / "motd").read_text() == "new" and (etc / "added").read_text() == "added"
    assert not os.path.lexists(etc / "gone")
    assert not os.path.lexists(os.path.join(img.rootfs, "data", "olddir"))
    assert os.path.isfile(os.path.join(img.rootfs, "bin", "busybox"))


async def test_multi_arch_index_picks_amd64(plain: Registry, tmp_path) -> None:
    roots = {}
    for arch in ("arm64", "amd64"):
        roots[arch] = busybox_rootfs(str(tmp_path / arch))
        (tmp_path / arch / "arch").write_text(arch)
    index_digest = push_multiarch(plain, roots, "sbx/multi:1")
    ref = f"{plain.host}/sbx/multi:1"
    assert await inspect_digest(ref, insecure=True) == index_digest
    img = await pull(ref, str(tmp_path / "img"), insecure=True)
    assert img.digest == index_digest
    host_arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64")
    assert pathlib.Path(img.rootfs, "arch").read_text() == host_arch


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
async def test_device_nodes_and_setuid_are_stripped(plain: Registry, tmp_path) -> None:
    root = busybox_rootfs(str(tmp_path / "base"))
    os.mknod(os.path.join(root, "evil-null"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
    os.makedirs(os.path.join(root, "dev"))
    os.mknod(os.path.join(root, "dev", "sda"), stat.S_IFBLK | 0o600, os.makedev(8, 0))
    suid = os.path.join(root, "bin", "suid")
    shutil.copy(os.path.join(root, "bin", "busybox"), suid)
    os.chmod(suid, 0o6755)
    ref = f"{plain.host}/sbx/hostile:1"
    push_rootfs(plain, root, "sbx/hostile:1")
    members = {m.name.lstrip("./"): m for m in _layer_members(ref, str(tmp_path))[0]}
    assert members["evil-null"].ischr() and members["dev/sda"].isblk()
    assert members["bin/suid"].mode & stat.S_ISUID
    img = await pull(ref, str(tmp_path / "img"), insecure=True)
    assert not os.path.lexists(os.path.join(img.rootfs, "evil-null"))
    assert not os.path.lexists(os.path.join(img.rootfs, "dev", "sda"))
    mode = os.lstat(os.path.join(img.rootfs, "bin", "suid")).st_mode
    assert stat.S_ISREG(mode) and not mode & (stat.S_ISUID | stat.S_ISGID)


@pytest.fixture(scope="module")
def private_image(secured: Registry, tmp_path_factory) -> tuple[str, str]:
    root = busybox_rootfs(str(tmp_path_factory.mktemp("private") / "rootfs"))
    digest = push_rootfs(secured, root, "sbx/private:1", cmd=["/bin/sh"])
    return f"{secured.host}/sbx/private:1", digest


async def test_credentials_work_and_never_leak(secured, private_image, tmp_path, monkeypatch,
                                               caplog) -> None:
    ref, digest = private_image
    argvs: list[tuple] = []
    real = asyncio.create_subprocess_exec

    async def spy(*argv, **kw):
        argvs.append(argv)
        return await real(*argv, **kw)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    caplog.set_level(logging.DEBUG, logger="sbx.images")
    assert await inspect_digest(ref, auth=secured.auth, insecure=True) == digest
    img = await pull(ref, str(tmp_path / "img"), auth=secured.auth, insecure=True)
    assert img.digest == digest and img.cmd == ["/bin/sh"]
    assert argvs and all(secured.password not in " ".join(map(str, a)) for a in argvs)
    assert secured.password not in caplog.text
    assert os.listdir(private_tmp) == []        # the auth file is gone


@pytest.mark.parametrize("which", ["none", "wrong"])
async def test_missing_or_wrong_credentials(which, secured, private_image, tmp_path) -> None:
    ref, _ = private_image
    auth = None if which == "none" else (secured.username, "wrong-" + secured.password)
    dest = tmp_path / "img"
    with pytest.raises(RegistryError, match="credentials") as exc:
        await pull(ref, str(dest), auth=auth, insecure=True)
    assert secured.password not in str(exc.value) and not dest.exists()
    with pytest.raises(RegistryError, match="credentials"):
        await inspect_digest(ref, auth=auth, insecure=True)


async def test_tls_verified_with_trusted_ca(secured, private_image, tmp_path, monkeypatch) -> None:
    ref, digest = private_image
    with pytest.raises(RegistryError, match="insecure=True") as exc:   # self-signed, untrusted
        await pull(ref, str(tmp_path / "a"), auth=secured.auth)
    assert "TLS" in str(exc.value) and not (tmp_path / "a").exists()
    monkeypatch.setenv("SSL_CERT_FILE", secured.ca_file)
    assert await inspect_digest(ref, auth=secured.auth) == digest


async def test_unknown_tag(plain: Registry, busybox, tmp_path) -> None:
    dest = tmp_path / "img"
    with pytest.raises(RegistryError, match="not found") as exc:
        await pull(f"{plain.host}/sbx/busybox:nope", str(dest), insecure=True)
    assert isinstance(exc.value, ImageBuildError) and "skopeo said:" in str(exc.value)
    assert not dest.exists()


async def test_unreachable_registry_fails_fast(tmp_path) -> None:
    dest = tmp_path / "img"
    start = time.monotonic()
    for insecure in (True, False):
        with pytest.raises(RegistryError, match="connection refused"):
            await pull(f"127.0.0.1:{free_port()}/sbx/x:1", str(dest), insecure=insecure)
    assert time.monotonic() - start < 10 and not dest.exists()


async def test_existing_dest_is_refused_and_kept(busybox, tmp_path) -> None:
    dest = tmp_path / "img"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(RegistryError, match="already exists"):
        await pull(busybox[0], str(dest), insecure=True)
    assert (dest / "keep").read_text() == "mine"


async def test_timeout_cleans_up(plain: Registry, busybox, tmp_path) -> None:
    dest = tmp_path / "img"
    with pytest.raises(RegistryError, match="time"):
        await pull(busybox[0], str(dest), insecure=True, timeout_s=0.001)
    assert not dest.exists()


async def test_cancelled_pull_kills_skopeo_and_cleans_up(busybox, tmp_path) -> None:
    dest = tmp_path / "img"
    seen: list[str] = []

    def progress(line: str) -> None:
        seen.append(line)
        if line.startswith("Copying "):     # skopeo is running: cancel the pull now
            assert dest.is_dir()
            task.cancel()
    task = asyncio.ensure_future(pull(busybox[0], str(dest), insecure=True, progress=progress))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert any(s.startswith("Copying ") for s in seen) and not dest.exists()
