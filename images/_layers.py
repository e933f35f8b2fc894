"""The content-addressed layer store (images layer).

A layer is the file-system result of one build step on top of its parent. On disk:
  layers/<key>/rootfs      the flattened, read-only tree sandboxes boot from: the parent's
                           rootfs hard-linked (`cp -al`, no data copied) with this layer's
                           diff applied; booting a 5-layer image costs what the base costs
  layers/<key>/diff        only this layer's changes (files hard-linked into rootfs)
  layers/<key>/layer.json  metadata (parent, what made it, deletions), written last: a
                           directory without it is incomplete and is never used
  layers/.tmp-<random>/    a layer being made; renamed to <key> only when complete

A diff is a directory tree plus two lists: paths deleted from the parent and directories
made opaque (their parent's content hidden). Whatever made it (an overlayfs upper of a
build step, a sandbox snapshot, local files), device nodes and setuid/setgid bits never
survive into a layer. Files already in a rootfs are never opened for writing: they are
shared with every other layer by hard links; changes only unlink and link.

Everything that touches the disk here is blocking and runs in a thread. Must not import
the server (`sandbox_service.server`), FastAPI or `sandbox_service`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import shutil
import stat
import time
from typing import Any, Awaitable, Callable

from ._model import ImageBuildError, write_json_atomic
from ._rootfs import MOUNT_POINTS, _ensure_dir, is_executable_in_root, remove_tree

log = logging.getLogger("sbx.images.layers")

LAYER_META = "layer.json"
PYTHON_PATHS = ("/usr/bin/python3", "/usr/local/bin/python3")
_SUID = stat.S_ISUID | stat.S_ISGID


@dataclasses.dataclass(frozen=True)
class Layer:
    key: str
    path: str
    parent: str | None
    meta: dict[str, Any]

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, "rootfs")

    @property
    def python(self) -> str | None:
        return self.meta.get("python")

    @property
    def size_bytes(self) -> int:
        return int(self.meta.get("diff_bytes") or 0)


@dataclasses.dataclass
class Diff:
    """What a producer leaves in `tmp/diff`: deletions and opaque dirs besides the tree."""

    deleted: list[str] = dataclasses.field(default_factory=list)
    opaque: list[str] = dataclasses.field(default_factory=list)
    rootfs_made: bool = False  # the producer wrote tmp/rootfs itself (a root layer)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


Producer = Callable[[str], Awaitable[Diff]]


class LayerStore:
    def __init__(self, layers_dir: str):
        self.dir = os.path.abspath(layers_dir)
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self._locks: dict[str, list] = {}  # key -> [lock, holders and waiters]
        self.building: set[str] = set()
        self.pinned: dict[str, int] = {}  # key -> builds/snapshots still registering it

    def get(self, key: str) -> Layer | None:
        if not key or "/" in key or key.startswith("."):
            return None
        path = os.path.join(self.dir, key)
        try:
            with open(os.path.join(path, LAYER_META)) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None
        return Layer(key, path, meta.get("parent"), meta)

    def pin(self, keys: list[str]) -> None:
        """Protect layers from gc until unpin (a build in progress, an image being recorded)."""
        for k in keys:
            self.pinned[k] = self.pinned.get(k, 0) + 1

    def unpin(self, keys: list[str]) -> None:
        for k in keys:
            n = self.pinned.get(k, 0) - 1
            if n > 0:
                self.pinned[k] = n
            else:
                self.pinned.pop(k, None)

    def keys(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.dir) if not n.startswith("."))
        except OSError:
            return []

    def chain(self, key: str) -> list[str]:
        """`key` and its ancestors, top first."""
        out: list[str] = []
        while key and key not in out:
            out.append(key)
            layer = self.get(key)
            key = layer.parent if layer else None
        return out

    async def ensure(self, key: str, parent: Layer | None, produce: Producer, *,
                     what: str, emit: Callable[[str], None]) -> tuple[Layer, bool]:
        """The layer `key`, made once with `produce` if it is not there; (layer, built?)."""
        layer = self.get(key)
        if layer is not None:
            return layer, False
        # One lock per key, kept while anyone holds or waits for it (a waiter must find
        # the same lock as whoever arrives after it, or two builds of one key would race).
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        lock = entry[0]
        if lock.locked():
            emit(f"waiting for the same step, being built by another request: {what}")
        entry[1] += 1
        try:
            async with lock:
                layer = self.get(key)
                if layer is not None:
                    return layer, False
                self.building.add(key)
                try:
                    return await self._make(key, parent, produce, what), True
                finally:
                    self.building.discard(key)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)

    async def _make(self, key: str, parent: Layer | None, produce: Producer, what: str) -> Layer:
        tmp: str | None = os.path.join(self.dir, ".tmp-" + secrets.token_hex(8))
        os.makedirs(os.path.join(tmp, "diff"), mode=0o755)
        t0 = time.monotonic()
        try:
            diff = await produce(tmp)
            meta = await asyncio.to_thread(self._finish, tmp, key, parent, diff, what)
            final = os.path.join(self.dir, key)
            existing = self.get(key)
            if existing is not None:  # made meanwhile (never replace a layer in use)
                return existing
            if os.path.lexists(final):  # an incomplete leftover of a crash
                await asyncio.to_thread(remove_tree, final)
            os.rename(tmp, final)
            tmp = None
        finally:
            if tmp is not None:
                await asyncio.shield(asyncio.to_thread(remove_tree, tmp))
        log.info("layer %s (%s) made in %.1fs", key[:16], what, time.monotonic() - t0)
        return Layer(key, final, meta.get("parent"), meta)

    def _finish(self, tmp: str, key: str, parent: Layer | None, diff: Diff,
                what: str) -> dict[str, Any]:
        rootfs = os.path.join(tmp, "rootfs")
        diff_dir = os.path.join(tmp, "diff")
        if diff.rootfs_made:
            size = sanitize_tree(rootfs)
        else:
            if parent is None:
                raise ImageBuildError("internal: a layer without a parent must make its rootfs")
            size = sanitize_tree(diff_dir)
            _copy_tree_linked(parent.rootfs, rootfs)
            apply_diff(rootfs, diff_dir, diff.deleted, diff.opaque)
        for path, mode in MOUNT_POINTS.items():  # the sandbox mounts over these
            _ensure_dir(rootfs, path, mode)
        python = next((p for p in PYTHON_PATHS if is_executable_in_root(rootfs, p)), None)
        meta = {"key": key, "parent": parent.key if parent else None, "what": what,
                "deleted": diff.deleted, "opaque": diff.opaque, "diff_bytes": size,
                "python": python, "created": time.time(), **diff.info}
        write_json_atomic(os.path.join(tmp, LAYER_META), meta)
        return meta

    def remove(self, key: str) -> None:
        """Delete a layer (the caller has checked nothing uses it)."""
        path = os.path.join(self.dir, key)
        if key and "/" not in key and not key.startswith(".") and os.path.isdir(path):
            # layer.json first: a half-removed layer must never look complete
            try:
                os.unlink(os.path.join(path, LAYER_META))
            except FileNotFoundError:
                pass
            remove_tree(path)

    def clean_tmp(self) -> None:
        """Remove layer directories a crash left half-made (call at startup, before builds)."""
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.startswith(".tmp-") or self.get(name) is None:
                log.warning("removing incomplete layer directory %s", path)
                try:
                    remove_tree(path)
                except OSError as e:
                    log.error("cannot remove %s: %s", path, e)

    def disk_usage(self, key: str) -> int:
        layer = self.get(key)
        return layer.size_bytes if layer else 0


# ---- tree operations (blocking) -----------------------------------------------------------

def sanitize_tree(root: str) -> int:
    """Delete device nodes (and other special files) and setuid/setgid bits; sum the bytes."""
    size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode) and st.st_mode & _SUID:
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~_SUID)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                if mode & _SUID:
                    os.chmod(p, stat.S_IMODE(mode) & ~_SUID)
                size += st.st_size
            elif not stat.S_ISLNK(mode):  # devices, fifos, sockets
                os.unlink(p)
    return size


def overlay_upper_to_diff(upper: str) -> Diff:
    """Turn an overlayfs upper directory into a Diff in place: whiteouts (0/0 character
    devices) become deletions, opaque directories are listed and their xattr dropped."""
    diff = Diff()
    for dirpath, dirnames, filenames in os.walk(upper):
        rel = os.path.relpath(dirpath, upper)
        rel_dir = "/" if rel == "." else "/" + rel
        for name in list(dirnames):
            p = os.path.join(dirpath, name)
            try:
                if os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                    diff.opaque.append(os.path.join(rel_dir, name))
                    os.removexattr(p, "trusted.overlay.opaque", follow_symlinks=False)
            except OSError:
                pass
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                diff.deleted.append(os.path.join(rel_dir, name))
                os.unlink(p)
    return diff


def _copy_tree_linked(src: str, dst: str) -> None:
    from runtimes import run_sync

    r = run_sync(["cp", "-a", "--link", "--no-target-directory", src, dst], check=False,
                 timeout_s=1800)
    if r.returncode != 0:
        why = r.err.strip()[-300:] or "it did not finish in 30 minutes"
        raise ImageBuildError(f"copying the parent layer failed: {why}; "
                              "check free disk space and inodes (df -i)")


def _real_dir_path(root: str, rel: str) -> str | None:
    """Host path of `rel` in `root` if every component before the last is a real directory
    (no symlink is ever followed); None otherwise."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    cur = root
    for comp in parts[:-1]:
        cur = os.path.join(cur, comp)
        try:
            if not stat.S_ISDIR(os.lstat(cur).st_mode):
                return None
        except FileNotFoundError:
            return None
    return os.path.join(cur, parts[-1])


def _remove_any(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def apply_diff(rootfs: str, diff_dir: str, deleted: list[str], opaque: list[str]) -> None:
    """Apply a diff to a hard-linked copy of the parent rootfs (never writes file data)."""
    for rel in deleted:
        target = _real_dir_path(rootfs, rel)
        if target is not None:
            _remove_any(target)
    for rel in opaque:
        target = _real_dir_path(rootfs, rel)
        if target is not None and os.path.isdir(target) and not os.path.islink(target):
            for name in os.listdir(target):
                _remove_any(os.path.join(target, name))
    for dirpath, dirnames, filenames in os.walk(diff_dir):
        rel_dir = os.path.relpath(dirpath, diff_dir)
        tdir = rootfs if rel_dir == "." else os.path.join(rootfs, rel_dir)
        for name in dirnames:
            src, dst = os.path.join(dirpath, name), os.path.join(tdir, name)
            st = os.lstat(src)
            if stat.S_ISLNK(st.st_mode):  # os.walk lists links to directories here
                _remove_any(dst)
                os.symlink(os.readlink(src), dst)
                os.lchown(dst, st.st_uid, st.st_gid)
                continue
            try:
                cur = os.lstat(dst)
                if not stat.S_ISDIR(cur.st_mode):
                    os.unlink(dst)
                    cur = None
            except FileNotFoundError:
                cur = None
            if cur is None:
                os.mkdir(dst)
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        dirnames[:] = [n for n in dirnames if not os.path.islink(os.path.join(dirpath, n))]
        for name in filenames:
            src, dst = os.path.join(dirpath, name), os.path.join(tdir, name)
            _remove_any(dst)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
                st = os.lstat(src)
                os.lchown(dst, st.st_uid, st.st_gid)
            else:
                os.link(src, dst, follow_symlinks=False)
