"""The layered image builder (images layer).

`Builder.build(steps)` walks a recipe: a source step (debian_slim, registry, an existing
image), then file-system steps, each a content-addressed layer made once (an unchanged
prefix is never rebuilt), and config steps folded into the image config.

Build steps are untrusted code: each command step runs in a gVisor sandbox whose root is an
overlayfs mount (lower: the parent layer's rootfs, read-only; upper: the new layer's diff),
with egress to package registries through the runtime's per-sandbox network namespace and
the host's CA bundle mounted read-only when one is configured. A failing step leaves no
layer and reports the command's last output lines.

Must not import the server (`sandbox_service.server`), FastAPI or `sandbox_service`; the
runtime comes in through the `runtimes` interface.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import dataclasses
import logging
import os
import pickle
import secrets
import shutil
import stat
import string
from typing import Any, AsyncIterator, Awaitable, Callable

from runtimes import ContainerSpec, ExecSpec, ExitFrame, HostCommandError, Runtime, run_command

from . import _steps
from ._layers import Diff, Layer, LayerStore, overlay_upper_to_diff
from ._model import ImageBuildError
from ._registry_layer import registry_layer
from ._rootfs import remove_tree, resolve_in_root
from ._store import ImageStore
from ._users import canonical_in_root, resolve_user, user_home

BUILD_CMD_TIMEOUT_S = 1800.0  # cp -a of a large base rootfs, mount, umount

log = logging.getLogger("sbx.images.build")

Emit = Callable[[str], None]
CA_PATH = "/.sbx/ca.pem"
CA_ENV = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
          "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO")
MAX_LOG_BYTES_PER_STEP = 4 << 20
TAIL_LINES = 25
TAIL_LINE = 1000      # characters of a line kept for the error message
MAX_LINE = 64 << 10   # a longer line (or output with no newline) is cut
_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclasses.dataclass
class BuildSettings:
    memory_mib: int = 4096
    cpu: float | None = None
    step_timeout_s: float = 1800.0
    egress: bool = True
    ca_bundle: str | None = None            # host file mounted read-only for build steps
    # host:port patterns (fnmatch) of registries on private addresses that may be pulled
    # from, without TLS verification
    private_registries: frozenset[str] = frozenset()
    min_free_mib: int = 1024                # a step is stopped below this much free disk


@dataclasses.dataclass
class BuildResult:
    top: Layer
    config: dict[str, Any]
    digest: str
    layers: list[str]
    built: int                              # layers made by this call (0: all cached)


def _build_cid() -> str:
    return "bd-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


class Builder:
    def __init__(self, *, layers: LayerStore, base: ImageStore, runtime: Runtime,
                 blobs_dir: str, settings: BuildSettings | None = None,
                 resolve_image: Callable[[str], Awaitable[tuple[str, dict[str, Any]]]] | None = None,
                 secret_key: bytes | None = None):
        self.layers = layers
        self.base = base
        self.runtime = runtime
        self.blobs_dir = blobs_dir
        self.settings = settings or BuildSettings()
        self.resolve_image = resolve_image
        self.active: set[str] = set()  # build sandboxes running now (the collector keeps them)
        # secret values enter cache keys only through an HMAC with this server-side key, so
        # a layer built with one principal's secret is never reused with another's
        self.secret_key = secret_key

    async def build(self, steps: list[dict[str, Any]], *, force_build: bool = False,
                    emit: Emit = lambda line: None) -> BuildResult:
        """Build (or find) every layer. The result's layers stay pinned against gc until
        the caller, having recorded the image, calls `layers.unpin(result.layers)`."""
        if not steps or steps[0]["kind"] not in _steps.SOURCE_KINDS:
            raise ImageBuildError("an image recipe starts with debian_slim, from_registry, "
                                  "from_dockerfile or from_id")
        layer, config = await self._source(steps[0], force_build, emit)
        chain = [layer.key]
        self.layers.pin(chain)
        try:
            layer, config, built = await self._steps(steps, layer, config, chain, force_build, emit)
        except BaseException:
            self.layers.unpin(chain)
            raise
        return BuildResult(top=layer, config=config, digest=_steps.image_digest(layer.key, config),
                           layers=chain, built=built)

    async def _steps(self, steps: list[dict[str, Any]], layer: Layer, config: dict[str, Any],
                     chain: list[str], force_build: bool, emit: Emit):
        built = 0
        total = len(steps)
        inherited_cmd = config.get("cmd") is not None
        for i, step in enumerate(steps[1:], start=2):
            kind = step["kind"]
            if kind in _steps.SOURCE_KINDS:
                raise ImageBuildError(f"step {i}: {kind} can only be the first step of a recipe")
            if kind in _steps.CONFIG_KINDS:
                cmd = config["cmd"]
                config = _steps.fold_config(config, step)
                if kind == "entrypoint" and not inherited_cmd:
                    config["cmd"] = cmd  # Docker resets only a CMD inherited from the base
                inherited_cmd = inherited_cmd and kind not in ("cmd", "entrypoint")
                continue
            if kind == "workdir":
                config = _steps.fold_config(config, step)
                target = resolve_in_root(layer.rootfs, step["path"])
                if target and os.path.isdir(target):
                    continue
                step = {"kind": "files", "entries": [{"path": step["path"], "type": "dir",
                                                      "mode": 0o755}]}
            ctx = {"env": config["env"], "workdir": config["workdir"], "user": config["user"]}
            force = force_build or bool(step.get("force_build"))
            key = _steps.layer_key(layer.key, step, ctx, force, secret_key=self.secret_key)
            what = _steps.describe(step)
            emit(f"[{i}/{total}] {what}")
            produce = (self._files_producer(layer, step) if step["kind"] == "files"
                       else self._run_producer(layer, step, config, emit))
            if kind == "function":
                emit("    (reruns when the function's source, its arguments, its secrets or "
                     "an earlier step change)")
            layer, made = await self.layers.ensure(key, layer, produce, what=what, emit=emit)
            self.layers.pin([layer.key])
            chain.append(layer.key)
            built += made
            if not made:
                emit("    cached")
        return layer, config, built

    # ---- sources ----------------------------------------------------------------------
    async def _source(self, step: dict[str, Any], force: bool,
                      emit: Emit) -> tuple[Layer, dict[str, Any]]:
        kind = step["kind"]
        config = _steps.empty_config()
        if kind == "image":
            if self.resolve_image is None:
                raise ImageBuildError("internal: no image resolver")
            key, config = await self.resolve_image(step["image_id"])
            layer = self.layers.get(key)
            if layer is None:
                raise ImageBuildError(f"the layers of image {step['image_id']} are gone; "
                                      "rebuild it from its recipe")
            return layer, config
        if kind == "debian_slim":
            suite = _steps.suite_for(step.get("python_version"))
            emit(f"[1] debian_slim ({suite})")
            note = _steps.python_substitution(step.get("python_version"))
            if note:
                emit("    " + note)
                log.warning("%s", note)
            base = await self.base.ensure_base(progress=emit, suite=suite)
            return await self.base_layer(base, emit, force or bool(step.get("force_build"))), config
        return await self._registry(step, force, emit)

    async def base_layer(self, base: Any, emit: Emit = lambda line: None,
                         force: bool = False) -> Layer:
        """The root layer of a base image (a BuiltImage): its rootfs hard-linked."""
        key = _steps.layer_key(None, {"kind": "base", "image_id": base.image_id}, {}, force)

        async def from_base(tmp: str) -> Diff:
            await _run(["cp", "-a", "--link", "--no-target-directory", base.rootfs,
                        os.path.join(tmp, "rootfs")])
            return Diff(rootfs_made=True, info={"source": f"debian_slim:{base.image_id}"})

        layer, _ = await self.layers.ensure(key, None, from_base, what="debian_slim", emit=emit)
        return layer

    async def _registry(self, step: dict[str, Any], force: bool,
                        emit: Emit) -> tuple[Layer, dict[str, Any]]:
        return await registry_layer(self.layers, self.settings.private_registries, step,
                                    force, emit, namespace=self._pull_namespace)

    @contextlib.asynccontextmanager
    async def _pull_namespace(self) -> AsyncIterator[str | None]:
        """A policed network namespace for a registry pull, kept from the collector."""
        cid = _build_cid()
        self.active.add(cid)
        try:
            async with self.runtime.egress_namespace(cid) as path:
                yield path
        finally:
            self.active.discard(cid)

    # ---- file-system steps ------------------------------------------------------------
    def _files_producer(self, parent: Layer, step: dict[str, Any]):
        async def produce(tmp: str) -> Diff:
            await asyncio.to_thread(_write_files, parent.rootfs, os.path.join(tmp, "diff"),
                                    step, self.blobs_dir)
            return Diff()
        return produce

    def _run_producer(self, parent: Layer, step: dict[str, Any], config: dict[str, Any],
                      emit: Emit):
        commands = _steps.commands_for(step)

        async def produce(tmp: str) -> Diff:
            upper, work, merged = (os.path.join(tmp, d) for d in ("diff", "work", "merged"))
            os.makedirs(work)
            os.makedirs(merged)
            opts = (f"lowerdir={parent.rootfs},upperdir={upper},workdir={work},"
                    "redirect_dir=off,metacopy=off,index=off")
            await _run(["mount", "-t", "overlay", "overlay", "-o", opts, merged])
            try:
                mounts = ()
                if step["kind"] == "function":
                    mounts = await asyncio.to_thread(_function_mounts, tmp, step, self.blobs_dir)
                await self._run_commands(merged, parent, step, config, commands, emit, mounts)
            finally:
                # the sandbox is destroyed: nothing may still hold (and write) the upper
                # directory when the host starts reading it
                try:
                    await _run(["umount", merged])
                except ImageBuildError:
                    await _run(["umount", "-l", merged], check=False)
                    raise ImageBuildError("the build step's overlay was still busy after its "
                                          "sandbox ended; the layer was discarded: retry") from None
                await asyncio.to_thread(_clean_build_dirs, tmp, parent.rootfs)
            return await asyncio.to_thread(overlay_upper_to_diff, upper)
        return produce

    async def _run_commands(self, root: str, parent: Layer, step: dict[str, Any],
                            config: dict[str, Any], commands: list[str], emit: Emit,
                            mounts: tuple[tuple[str, str], ...] = ()) -> None:
        s = self.settings
        env = {**config["env"], **(step.get("secret_env") or {})}
        if step["kind"] in ("pip", "uv_pip"):
            env = {**_steps.PIP_ENV, **env}
        if s.ca_bundle and os.path.isfile(s.ca_bundle):
            mounts = (*mounts, (s.ca_bundle, CA_PATH))
            env.update({k: CA_PATH for k in CA_ENV})
        uid, gid = resolve_user(parent.rootfs, config["user"])
        home = user_home(parent.rootfs, uid) if config["user"] else None
        if home and "HOME" not in env:  # as for sandboxes of the image
            env["HOME"] = home
        cid = _build_cid()
        self.active.add(cid)
        try:
            await self.runtime.create(ContainerSpec(
                container_id=cid, rootfs=root, env=env, memory_mib=s.memory_mib, cpu=s.cpu,
                writable_rootfs=True, egress=s.egress, mounts=mounts))
            watch = asyncio.create_task(self._watch_disk(cid))
            results = []
            try:
                timeout_s = min(step.get("timeout_s") or s.step_timeout_s, s.step_timeout_s)
                for cmd in commands:
                    results.append((cmd, *await self._exec(cid, cmd, config, uid, gid, emit,
                                                            timeout_s)))
                    if results[-1][1] != 0:
                        break
            except Exception:
                if not (watch.done() and watch.result()):
                    raise
            finally:
                watch.cancel()
            if watch.done() and not watch.cancelled() and watch.result():
                raise ImageBuildError(
                    f"build step stopped: the disk under {self.layers.dir} went below "
                    f"{s.min_free_mib} MiB free while it ran (a layer this large, or a step "
                    "that writes without end?). Free some space, or `sbx image gc`")
            for cmd, code, tail in results:
                if code != 0:
                    shown = "\n".join(tail)
                    reason = ("timed out after " + f"{timeout_s:g}s" if code == 124
                              else f"exited with code {code}")
                    raise ImageBuildError(f"build step failed: `{_short(cmd)}` {reason}.\n"
                                          f"Last output:\n{shown}")
        finally:
            try:
                await self.runtime.destroy(cid)
            finally:
                self.active.discard(cid)

    async def _watch_disk(self, cid: str) -> bool:
        """Kill the step's sandbox if the layers' disk runs low (the memory cgroup does not
        bound what a build writes into its layer). True if it did."""
        floor = self.settings.min_free_mib << 20
        while True:
            await asyncio.sleep(1.0)
            st = os.statvfs(self.layers.dir)
            if st.f_bavail * st.f_frsize < floor:
                log.warning("build %s: disk below %d MiB free, stopping it", cid,
                            self.settings.min_free_mib)
                await self.runtime.destroy(cid)
                return True

    async def _exec(self, cid: str, cmd: str, config: dict[str, Any], uid: int, gid: int,
                    emit: Emit, timeout_s: float) -> tuple[int, list[str]]:
        stream = await self.runtime.exec(cid, ExecSpec(
            argv=["/bin/sh", "-c", cmd], cwd=config["workdir"] or "/",
            timeout_s=timeout_s, uid=uid, gid=gid))
        decoders = {"stdout": codecs.getincrementaldecoder("utf-8")("replace"),
                    "stderr": codecs.getincrementaldecoder("utf-8")("replace")}
        pending = {"stdout": "", "stderr": ""}
        tail: list[str] = []
        logged = 0
        code = 1
        try:
            async for ev in stream.events():
                if isinstance(ev, ExitFrame):
                    code = ev.exit_code
                    continue
                name, data = ev
                text = pending[name] + decoders[name].decode(data)
                *lines, pending[name] = text.split("\n")
                if len(pending[name]) > MAX_LINE:  # no newline coming: emit what we have
                    lines.append(pending[name])
                    pending[name] = ""
                for line in lines:
                    line = line if len(line) <= MAX_LINE else line[:MAX_LINE] + " [line truncated]"
                    tail = (tail + [line[:TAIL_LINE]])[-TAIL_LINES:]
                    logged += len(line)
                    if logged <= MAX_LOG_BYTES_PER_STEP:
                        emit("    " + line)
                    elif logged - len(line) <= MAX_LOG_BYTES_PER_STEP:
                        emit("    ... (more output not shown)")
        finally:
            await stream.close()
        for rest in pending.values():
            if rest:
                tail = (tail + [rest[:TAIL_LINE]])[-TAIL_LINES:]
                emit("    " + rest[:MAX_LINE])
        return code, tail


def _short(cmd: str) -> str:
    return cmd if len(cmd) <= 200 else cmd[:197] + "..."


async def _run(argv: list[str], check: bool = True) -> None:
    """cp/mount/umount for a build step (killed if the build is cancelled)."""
    try:
        await run_command(argv, check=check, merge_stderr=True, timeout_s=BUILD_CMD_TIMEOUT_S)
    except HostCommandError as e:
        raise ImageBuildError(str(e)) from None


def _clean_build_dirs(tmp: str, lower: str) -> None:
    """After a build step: drop the overlay's work and mount dirs, and what the sandbox's
    own mounts left in the upper (/.sbx, an /etc/resolv.conf the image did not have)."""
    for name in ("work", "merged", "src", "src-root"):
        remove_tree(os.path.join(tmp, name))
    upper = os.path.join(tmp, "diff")
    remove_tree(os.path.join(upper, ".sbx"))
    etc = os.path.join(upper, "etc")
    resolv = os.path.join(etc, "resolv.conf")
    if (os.path.isdir(etc) and not os.path.islink(etc) and os.path.lexists(resolv)
            and not os.path.lexists(os.path.join(lower, "etc", "resolv.conf"))):
        os.unlink(resolv)


_NO_ARGS = pickle.dumps(((), {}), protocol=4)


def _function_mounts(tmp: str, step: dict[str, Any],
                     blobs_dir: str) -> tuple[tuple[str, str], ...]:
    """A function step's read-only mounts: its module's source and pickled arguments at
    /.sbx/src, and the server's SDK at /.sbx/sdk and /.sbx/sdk-deps."""
    empty, src = os.path.join(tmp, "src-root"), os.path.join(tmp, "src")
    os.makedirs(empty)
    os.makedirs(src)
    _write_files(empty, src, {"entries": step["entries"]}, blobs_dir)
    with open(os.path.join(src, ".sbx-args"), "wb") as f:
        f.write(base64.b64decode(step.get("args_b64") or "") or _NO_ARGS)
    sdk_dirs = step.get("sdk_dirs") or ()
    if len(sdk_dirs) != 2:
        raise ImageBuildError("internal: this server gave run_function no SDK to mount")
    return ((src, "/.sbx/src"), (sdk_dirs[0], "/.sbx/sdk"), (sdk_dirs[1], "/.sbx/sdk-deps"))


def _write_files(parent_root: str, diff: str, step: dict[str, Any], blobs_dir: str) -> None:
    """Lay local files out in a diff, at their paths as the image resolves them (so a
    destination under /lib -> /usr/lib lands in /usr/lib, and never outside the image).

    Entries come from a client: symlink entries are created last and nothing may be placed
    below one, and no path component in the diff is ever a symlink we would follow."""
    uid, gid = resolve_user(parent_root, step.get("chown")) if step.get("chown") else (0, 0)
    placed: list[tuple[str, dict[str, Any]]] = []
    for entry in step["entries"]:
        path = entry["path"]
        base = os.path.basename(path.rstrip("/"))
        if base in (".", ".."):
            raise ImageBuildError(f"{path}: a destination cannot end in '.' or '..'")
        rel_parent = canonical_in_root(parent_root, os.path.dirname(path.rstrip("/")) or "/")
        placed.append((os.path.join(rel_parent, base).strip("/"), entry))
    links = {rel for rel, e in placed if e.get("type") == "symlink"}
    for rel, entry in placed:
        if any(rel.startswith(link + "/") for link in links):
            raise ImageBuildError(f"{entry['path']}: cannot add files below the symbolic link "
                                  "added in the same step; add the directory instead")
    for rel, entry in sorted(placed, key=lambda p: p[1].get("type") == "symlink"):
        _make_parents(parent_root, diff, os.path.dirname(rel))
        dst = os.path.join(diff, rel) if rel else diff
        etype = entry.get("type", "file")
        try:
            cur = os.lstat(dst)
        except FileNotFoundError:
            cur = None
        if cur is not None and rel and not (etype == "dir" and stat.S_ISDIR(cur.st_mode)):
            if stat.S_ISDIR(cur.st_mode):
                shutil.rmtree(dst)
            else:
                os.unlink(dst)
        mode = int(entry.get("mode", 0o644)) & 0o7777 & ~(stat.S_ISUID | stat.S_ISGID)
        if etype == "dir":
            if not os.path.lexists(dst):
                os.mkdir(dst)
            os.chmod(dst, mode or 0o755)
        elif etype == "symlink":
            os.symlink(entry["target"], dst)
        else:
            blob = os.path.join(blobs_dir, entry["sha256"])
            if not os.path.isfile(blob):
                raise ImageBuildError(f"file content {entry['sha256'][:12]} for "
                                      f"{entry['path']} was not uploaded; build the image "
                                      "again from the SDK")
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out, open(blob, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(dst, mode)
        os.lchown(dst, uid, gid)


def _make_parents(parent_root: str, diff: str, rel_dir: str) -> None:
    cur = ""
    for comp in [c for c in rel_dir.split("/") if c]:
        cur = os.path.join(cur, comp)
        dst = os.path.join(diff, cur)
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                continue
            os.unlink(dst)  # a file or link of an earlier entry: a directory replaces it
        os.mkdir(dst)
        try:  # an existing directory keeps its owner and mode (/tmp stays 1777)
            st = os.lstat(os.path.join(parent_root, cur))
            if stat.S_ISDIR(st.st_mode):
                os.chmod(dst, stat.S_IMODE(st.st_mode))
                os.chown(dst, st.st_uid, st.st_gid)
                continue
        except FileNotFoundError:
            pass
        os.chmod(dst, 0o755)
