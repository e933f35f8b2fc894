"""Pulling OCI images from a registry into a sandbox rootfs (images layer).

`skopeo` fetches the image (by the digest the reference resolves to, so that a moving tag
cannot change between the digest lookup and the download) into an OCI layout, `umoci raw
unpack` applies its layers, and `_rootfs.finalize_rootfs` makes the tree fit to be shared
read-only. Every tool runs as an argument list with a timeout, in its own session, and is
killed with its children on timeout or cancellation. Credentials go to skopeo through a 0600
auth file in a private temporary directory, never through argv or logs; without credentials
skopeo is told to use none (the host's own registry logins are never used on a caller's
behalf). With `netns` (a network namespace path), skopeo runs inside it under `nsenter
--net`: the caller hands it a namespace policed like a sandbox's egress, so a redirect or a
name that re-resolves to a private address goes nowhere (umoci never touches the network).

This module must not import the server (`sandbox_service.server`), FastAPI, or
`sandbox_service`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from runtimes import start_command, stop_command

from ._model import ImageBuildError, format_size
from ._rootfs import finalize_rootfs, remove_tree

log = logging.getLogger("sbx.images")

INSPECT_TIMEOUT_S = 120.0
_LAYOUT, _TAG, _ROOTFS = "oci", "latest", "rootfs"
_INSTALL_HINT = "run `apt-get install skopeo umoci` on the host, then retry"
_POLICY_FILES = ("/etc/containers/policy.json", os.path.expanduser("~/.config/containers/policy.json"))
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64")

_ALLOWED_RE = re.compile(r"^[A-Za-z0-9._/:@\[\]-]+$")
_DOMAIN_COMP = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_COMP}(?:\.{_DOMAIN_COMP})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_PATH_COMP_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOOPBACK_RE = re.compile(r"^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$")


class RegistryError(ImageBuildError):
    """An image could not be pulled; the message says what to check or do next."""


@dataclasses.dataclass(frozen=True)
class PulledImage:
    digest: str                  # manifest digest "sha256:<hex>" the reference resolved to
    rootfs: str                  # absolute path of the unpacked rootfs (dest/rootfs)
    env: dict[str, str]          # image config Env
    workdir: str | None          # config WorkingDir ("" -> None)
    entrypoint: list[str] | None
    cmd: list[str] | None
    user: str | None             # config User ("" -> None)


@dataclasses.dataclass(frozen=True)
class _Ref:
    domain: str
    path: str               # repository path, "library/python"
    tag: str | None         # None when pinned by digest
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


def parse_reference(ref: str) -> str:
    """Validate and normalise an image reference ("python:3.11-slim" ->
    "docker.io/library/python:3.11-slim"); a tag given together with a digest is dropped
    (the digest pins the image). Raises RegistryError for anything malformed."""
    return str(_parse(ref))


def _parse(ref: str) -> _Ref:
    def bad(why: str) -> RegistryError:
        return RegistryError(f"invalid image reference {ref!r}: {why}; expected something "
                             "like python:3.11-slim, ghcr.io/owner/repo:tag or "
                             "registry.example.com:5000/repo@sha256:<64 hex digits>")
    if not isinstance(ref, str) or not ref:
        raise bad("it is empty")
    if len(ref) > 512 or not _ALLOWED_RE.fullmatch(ref):
        raise bad("only letters, digits and . _ - / : @ [ ] are allowed (no spaces or shell characters)")
    if ref[0] in "-./:@":
        raise bad(f"it may not start with {ref[0]!r}")
    name, _, digest = ref.partition("@")
    if "@" in ref and not _DIGEST_RE.fullmatch(digest):
        raise bad("the digest must be sha256: followed by 64 lowercase hex digits")
    head, _, last = name.rpartition("/")
    tag = None
    if ":" in last:
        last, _, tag = last.partition(":")
        if not _TAG_RE.fullmatch(tag):
            raise bad(f"bad tag {tag!r}")
    domain, path = _split_domain((head.split("/") if head else []) + [last])
    if not _DOMAIN_RE.fullmatch(domain):
        raise bad(f"bad registry host {domain!r}")
    bad_comps = [c for c in path if not _PATH_COMP_RE.fullmatch(c)]
    if bad_comps:
        raise bad(f"bad repository path component {bad_comps[0]!r} (lowercase letters, digits, . _ -)")
    if len(domain) + len("/".join(path)) >= 255:
        raise bad("the repository name is longer than 255 characters")
    return _Ref(domain, "/".join(path), None if digest else tag or "latest", digest or None)


def _split_domain(parts: list[str]) -> tuple[str, list[str]]:
    """(registry host, repository path components), Docker Hub's defaults applied."""
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost" or first[0] == "["):
        domain = "docker.io" if first in ("index.docker.io", "registry-1.docker.io") else first
        parts = parts[1:]
    else:
        domain = "docker.io"
    return domain, ["library", *parts] if domain == "docker.io" and len(parts) == 1 else parts


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise RegistryError(f"{name} is not installed: {_INSTALL_HINT}")
    return path


class _Access:
    """Per-call skopeo options (credentials, TLS, trust policy), with their files in a
    private temporary directory; close() removes it."""

    def __init__(self, ref: _Ref, auth: tuple[str, str] | None, insecure: bool,
                 netns: str | None = None):
        self.netns = netns
        if auth is not None and (not auth[0] or ":" in auth[0] or not auth[1]):
            raise RegistryError("invalid credentials: give a non-empty username without ':' "
                                "and a non-empty password (or token)")
        self.auth, self.insecure, self.secrets = auth, insecure, []
        self._dir = tempfile.mkdtemp(prefix="sbx-skopeo-")
        try:
            if auth is not None:
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                self.secrets = [auth[1], token]
                self._write("auth.json", {"auths": {ref.domain: {"auth": token}}})
            if not any(os.path.exists(p) for p in _POLICY_FILES):
                self._write("policy.json", {"default": [{"type": "insecureAcceptAnything"}]})
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def _write(self, name: str, data: dict[str, Any]) -> None:
        path = os.path.join(self._dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)

    def skopeo(self, skopeo: str) -> list[str]:
        """The start of a skopeo command line: in the caller's namespace when given."""
        return ["nsenter", f"--net={self.netns}", "--", skopeo] if self.netns else [skopeo]

    def global_args(self) -> list[str]:
        policy = os.path.join(self._dir, "policy.json")
        return ([f"--policy={policy}"] if os.path.exists(policy) else []) + [
            "--override-os=linux", f"--override-arch={_ARCH}"]

    def source_args(self, prefix: str) -> list[str]:
        """Options for the registry side; prefix "" for inspect, "src-" for copy."""
        tls = "false" if self.insecure else "true"
        creds = (f"--{prefix}authfile={os.path.join(self._dir, 'auth.json')}"
                 if self.auth is not None else f"--{prefix}no-creds")
        return [f"--{prefix}tls-verify={tls}", creds]


def _last_line(stderr: str, secrets: list[str]) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else "(no output)"
    m = re.search(r'msg="(.*)"\s*$', last)
    if m:
        last = m.group(1).replace('\\"', '"')
    for secret in secrets:
        last = last.replace(secret, "***")
    return last[-600:]


def _skopeo_error(stderr: str, ref: _Ref, access: _Access) -> RegistryError:
    low, host = stderr.lower(), ref.domain
    if "connection refused" in low:
        what = (f"cannot connect to the registry {host}: connection refused; check the host "
                "and port in the reference and that the registry is running")
    elif "no such host" in low or "server misbehaving" in low:
        what = (f"cannot resolve the registry host {host}: check its spelling and this "
                "host's DNS and network")
    elif any(s in low for s in ("x509:", "tls:", "certificate", "http response to https client")):
        hint = ("for a registry on loopback (plain http or a self-signed certificate) pull "
                "with insecure=True, or trust its CA" if _LOOPBACK_RE.fullmatch(host) else
                "trust the registry's CA (add it to the bundle that SSL_CERT_FILE names), "
                "or use insecure=True only for a registry you control")
        what = f"TLS to the registry {host} failed: {hint}"
    elif any(s in low for s in ("unauthorized", "authentication required", "resource is denied", "denied: ")):
        what = (f"the registry {host} refused the credentials for {ref.name}: check the "
                "username and password (or token) and that the account may pull this repository"
                if access.auth else
                f"the registry {host} requires credentials to pull {ref.name} (or the "
                "repository does not exist): check the reference, then pass credentials")
    elif any(s in low for s in ("manifest unknown", "name unknown", "not found")):
        what = (f"image {ref} not found in {host}: check the repository name and the tag "
                "(or digest)")
    elif "no image found in manifest list" in low or "choosing image instance" in low:
        what = f"{ref} has no linux/{_ARCH} image: pick a tag built for this platform"
    elif any(s in low for s in ("timeout", "deadline exceeded", "unreachable", "no route")):
        what = f"the network to the registry {host} failed: check connectivity and proxies, then retry"
    elif "no space left" in low:
        what = "the disk is full: free space in the images directory, then retry"
    else:
        what = f"skopeo could not fetch {ref}: check the reference, the credentials and the network"
    return RegistryError(f"{what}. skopeo said: {_last_line(stderr, access.secrets)}")


async def _run(argv: list[str], *, timeout_s: float, cwd: str | None = None,
               on_line: Callable[[str], None] | None = None) -> tuple[int, bytes, str]:
    """Run `argv` (never through a shell); returns (exit code, stdout, stderr)."""
    tool = os.path.basename(argv[argv.index("--") + 1] if argv[0] == "nsenter" else argv[0])
    if timeout_s <= 0:
        raise RegistryError(f"{tool} not started: the pull ran out of time; retry with a longer timeout")
    log.debug("running %s", argv)
    try:
        proc = await start_command(argv, cwd=cwd)
    except FileNotFoundError:
        raise RegistryError(f"{tool} is not installed: {_INSTALL_HINT}") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out, err = await asyncio.wait_for(
            asyncio.gather(_read(proc.stdout, on_line), proc.stderr.read()), timeout_s)
        rc = await asyncio.wait_for(proc.wait(), 10)
    except asyncio.TimeoutError:
        await stop_command(proc)
        raise RegistryError(f"{tool} did not finish within {timeout_s:.0f} s: check the network "
                            "to the registry, or retry with a longer timeout") from None
    except BaseException:
        await stop_command(proc)
        raise
    log.debug("%s exited %d", tool, rc)
    return rc, out, err.decode(errors="replace")


async def _read(stream: asyncio.StreamReader, on_line: Callable[[str], None] | None) -> bytes:
    data, pending = bytearray(), b""
    while chunk := await stream.read(65536):
        data += chunk
        if on_line is not None:
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                on_line(line.decode(errors="replace").rstrip())
    if on_line is not None and pending:
        on_line(pending.decode(errors="replace").rstrip())
    return bytes(data)


async def inspect_digest(ref: str, *, auth: tuple[str, str] | None = None,
                         insecure: bool = False, netns: str | None = None) -> str:
    """The manifest digest ("sha256:<hex>") `ref` resolves to, without fetching layers (for
    a multi-arch image, the index's digest). Use it as a cache key before pulling."""
    parsed, skopeo = _parse(ref), _tool("skopeo")
    access = _Access(parsed, auth, insecure, netns)
    try:
        return await _inspect(skopeo, parsed, access, INSPECT_TIMEOUT_S)
    finally:
        access.close()


async def _inspect(skopeo: str, ref: _Ref, access: _Access, timeout_s: float) -> str:
    argv = [*access.skopeo(skopeo), *access.global_args(), "inspect", "--raw", *access.source_args(""), f"docker://{ref}"]
    rc, raw, stderr = await _run(argv, timeout_s=timeout_s)
    if rc != 0:
        raise _skopeo_error(stderr, ref, access)
    if b'"schemaVersion":1' in raw.replace(b" ", b""):
        raise RegistryError(f"{ref} uses the obsolete Docker schema 1 manifest: re-push it "
                            "with a current Docker, buildah or skopeo")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def pull(ref: str, dest: str, *, auth: tuple[str, str] | None = None,
               insecure: bool = False, progress: Callable[[str], None] | None = None,
               timeout_s: float = 1800, netns: str | None = None) -> PulledImage:
    """Pull `ref` into `dest` (a directory that must not exist yet): `dest/rootfs` is the
    finalized rootfs and nothing else is left there. On failure `dest` is removed."""
    parsed, skopeo, umoci = _parse(ref), _tool("skopeo"), _tool("umoci")
    emit = progress or (lambda _line: None)
    dest = os.path.abspath(dest)
    if os.path.lexists(dest):
        raise RegistryError(f"{dest} already exists: pull into a new directory (remove it "
                            "first if it is a leftover of an earlier pull)")
    deadline = time.monotonic() + timeout_s
    emit(f"pulling {parsed}")
    access = _Access(parsed, auth, insecure, netns)
    try:
        digest = await _inspect(skopeo, parsed, access, min(INSPECT_TIMEOUT_S, timeout_s))
        try:
            os.makedirs(dest, 0o755)
        except OSError as e:
            raise RegistryError(f"cannot create {dest} ({e}): pull into a new directory in a "
                                "writable place") from None
        try:
            return await _fetch_and_unpack(skopeo, umoci, parsed, digest, dest, access,
                                           emit, deadline)
        except BaseException:
            await asyncio.to_thread(remove_tree, dest)
            raise
    finally:
        access.close()


async def _fetch_and_unpack(skopeo: str, umoci: str, ref: _Ref, digest: str, dest: str,
                            access: _Access, emit: Callable[[str], None],
                            deadline: float) -> PulledImage:
    pinned = _Ref(ref.domain, ref.path, None, digest)
    argv = [*access.skopeo(skopeo), *access.global_args(), "copy", *access.source_args("src-"),
            f"docker://{pinned}", f"oci:{_LAYOUT}:{_TAG}"]
    rc, _, stderr = await _run(argv, timeout_s=deadline - time.monotonic(), cwd=dest,
                               on_line=lambda ln: emit(ln) if ln.startswith("Copying ") else None)
    if rc != 0:
        raise _skopeo_error(stderr, ref, access)
    emit("unpacking")
    argv = [umoci, "raw", "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
            "--image", f"{_LAYOUT}:{_TAG}", _ROOTFS]
    rc, _, stderr = await _run(argv, timeout_s=deadline - time.monotonic(), cwd=dest)
    if rc != 0:
        raise RegistryError(f"umoci could not unpack {ref}: check free disk space under "
                            f"{dest}, then retry. umoci said: {_last_line(stderr, [])}")
    layout, rootfs = os.path.join(dest, _LAYOUT), os.path.join(dest, _ROOTFS)
    config = await asyncio.to_thread(_read_config, layout)
    _, size = await asyncio.to_thread(finalize_rootfs, rootfs)
    await asyncio.to_thread(remove_tree, layout)
    emit(f"pulled {ref.name}@{digest} ({format_size(size)})")
    return PulledImage(digest=digest, rootfs=rootfs, env=_env(config.get("Env")),
                       workdir=_str(config.get("WorkingDir")),
                       entrypoint=_str_list(config.get("Entrypoint")),
                       cmd=_str_list(config.get("Cmd")), user=_str(config.get("User")))


def _read_config(layout: str) -> dict[str, Any]:
    """The `config` object of the image config blob (index.json -> manifest -> config)."""
    try:
        (desc,) = _load_json(os.path.join(layout, "index.json"))["manifests"]
        manifest = _load_json(_blob_path(layout, desc["digest"]))
        inner = _load_json(_blob_path(layout, manifest["config"]["digest"])).get("config")
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as e:
        raise RegistryError(f"cannot read the image config in the pulled OCI layout {layout} "
                            f"({e!r}): the image is corrupt or unsupported; retry the pull") from None
    return inner if isinstance(inner, dict) else {}


def _blob_path(layout: str, digest: Any) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"bad blob digest {digest!r}")
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _env(entries: Any) -> dict[str, str]:
    pairs = [e.partition("=") for e in entries or [] if isinstance(e, str) and "=" in e]
    return {key: value for key, _, value in pairs}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _str_list(value: Any) -> list[str] | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return list(value) if ok else None
