"""A registry image as a root layer (images layer).

The layer's key is the repository *and* the manifest digest inspected first; the copy is
pinned to that digest and checked against it, so a registry that answers two lookups
differently (or a tag that moves between them) can never put other content under a
digest some other image is known by. Registries on private, loopback or link-local
addresses (literal, or what the name resolves to) are refused unless the operator allows
them (SBX_PRIVATE_REGISTRIES), and a public registry is then reached from a network
namespace policed like a sandbox's egress (`namespace`, from the runtime): a redirect, or
a name that resolves differently the second time, cannot lead the pull to the host, its
networks or a metadata address. Allowed private registries are reached from the host's
network, as are all registries when the host sends its traffic through an HTTP(S) proxy
from the environment (the namespace could not reach a proxy on a private address).
Must not import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import os
import socket
from typing import Any, AsyncContextManager, Callable

from security import is_blocked_address

from . import _registry, _steps
from ._layers import Diff, Layer, LayerStore
from ._model import ImageBuildError
from ._rootfs import _ensure_dir, remove_tree
from ._users import canonical_in_root

Emit = Callable[[str], None]
Namespace = Callable[[], AsyncContextManager[str | None]]
_PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def _hostname(domain: str) -> str:
    if domain.startswith("["):
        return domain[1:domain.find("]")] if "]" in domain else domain
    return domain.rsplit(":", 1)[0] if ":" in domain else domain


def _is_host_address(addr: str) -> bool:
    """True if `addr` is one of this host's own addresses (only those can be bound)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr.split("%", 1)[0], 0))
        except OSError:
            return False
    return True


async def check_host(domain: str, allowed: frozenset[str]) -> bool:
    """True when the registry is an allowed private one (pulled without TLS checks);
    False for a public one; ImageBuildError for a private one not allowed."""
    domain = domain.lower()
    if any(fnmatch.fnmatchcase(domain, p.lower()) for p in allowed):
        return True
    name = _hostname(domain)
    private = name == "localhost" or name.endswith(".localhost")
    if not private:
        try:
            addrs = [str(ipaddress.ip_address(name))]
        except ValueError:  # a name: what it resolves to now
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(name, None)
            except OSError:
                infos = []  # unresolvable: skopeo reports it
            addrs = [info[4][0] for info in infos]
        private = any(is_blocked_address(a) or _is_host_address(a) for a in addrs)
    if private:
        raise ImageBuildError(
            f"registry {domain} is on a private, loopback or link-local address: the service "
            "does not pull from those unless the operator lists it in SBX_PRIVATE_REGISTRIES "
            "(host:port patterns, comma-separated) when starting `sbx serve`")
    return False


async def registry_layer(layers: LayerStore, private: frozenset[str], step: dict[str, Any],
                         force: bool, emit: Emit,
                         namespace: Namespace | None = None) -> tuple[Layer, dict[str, Any]]:
    parsed = _registry._parse(step["ref"])
    insecure = await check_host(parsed.domain, private)
    policed = namespace is not None and not insecure and not any(
        os.environ.get(v) for v in _PROXY_VARS)
    async with (namespace() if policed else contextlib.nullcontext(None)) as netns:
        return await _registry_layer(layers, parsed, insecure, netns, step, force, emit)


async def _registry_layer(layers: LayerStore, parsed: Any, insecure: bool, netns: str | None,
                          step: dict[str, Any], force: bool,
                          emit: Emit) -> tuple[Layer, dict[str, Any]]:
    repo = f"{parsed.domain}/{parsed.path}"
    env = step.get("secret_env") or {}
    auth = None
    if env.get("REGISTRY_USERNAME") or env.get("REGISTRY_PASSWORD"):
        auth = (env.get("REGISTRY_USERNAME", ""), env.get("REGISTRY_PASSWORD", ""))
    emit(f"[1] from_registry {parsed}")
    digest = await _registry.inspect_digest(str(parsed), auth=auth, insecure=insecure,
                                            netns=netns)
    key = _steps.layer_key(None, {"kind": "registry", "repository": repo, "digest": digest},
                           {}, force or bool(step.get("force_build")))
    pulled: dict[str, Any] = {}

    async def pull(tmp: str) -> Diff:
        img = await _registry.pull(f"{repo}@{digest}", os.path.join(tmp, "pull"), auth=auth,
                                   insecure=insecure, progress=emit, netns=netns)
        if img.digest != digest:
            raise ImageBuildError(f"{repo} answered with {img.digest} after announcing "
                                  f"{digest}: refusing an image that changed under its name")
        os.rename(img.rootfs, os.path.join(tmp, "rootfs"))
        if img.workdir:  # Docker creates a config WorkingDir the image lacks
            await asyncio.to_thread(_make_workdir, os.path.join(tmp, "rootfs"), img.workdir)
        await asyncio.to_thread(remove_tree, os.path.join(tmp, "pull"))
        cfg = {"env": img.env, "workdir": img.workdir, "entrypoint": img.entrypoint,
               "cmd": img.cmd, "user": img.user}
        pulled.update(cfg)
        return Diff(rootfs_made=True, info={"source": f"registry:{repo}@{digest}", "config": cfg})

    layer, _ = await layers.ensure(key, None, pull, what=f"registry {parsed}", emit=emit)
    cfg = layer.meta.get("config") or pulled
    return layer, {**_steps.empty_config(), **cfg, "env": dict(cfg.get("env") or {})}


def _make_workdir(rootfs: str, workdir: str) -> None:
    _ensure_dir(rootfs, canonical_in_root(rootfs, workdir), 0o755)
