"""Making a freshly bootstrapped tree fit to be a shared read-only rootfs (images layer).

Everything here is blocking file-system work: callers run it in a thread
(`asyncio.to_thread`). Paths inside the rootfs are always resolved relative to the rootfs,
never by following its symlinks on the host (an absolute link in the image must not lead
us to modify the host). Removal of a tree first detaches any mount left below it (a killed
debootstrap can leave /proc or bind-mounted /dev nodes mounted in its target).

This module must not import the server (`sandbox_service.server`) or FastAPI.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import logging
import os
import shutil
import stat

log = logging.getLogger("sbx.images")

# Mount points of a sandbox: the rootfs is mounted read-only, so they must pre-exist.
MOUNT_POINTS = {"/tmp": 0o1777, "/root": 0o700, "/dev": 0o755, "/proc": 0o555,
                "/sys": 0o555, "/.sbx": 0o755, "/.sbx/agent": 0o755, "/.sbx/run": 0o755}
PYTHON_PATH = "/usr/bin/python3"
_MNT_DETACH = 2


def finalize_rootfs(root: str) -> tuple[str | None, int]:
    """Strip the tree for sharing; returns (python path or None, size in bytes)."""
    root = os.path.abspath(root)
    _remove_apt_leftovers(root)
    size = _strip_tree(root)
    for path, mode in MOUNT_POINTS.items():
        _ensure_dir(root, path, mode)
    os.chmod(root, 0o755)
    python = PYTHON_PATH if is_executable_in_root(root, PYTHON_PATH) else None
    return python, size


def _strip_tree(root: str) -> int:
    """Delete device nodes and setuid/setgid bits (staying on one file system); sum sizes."""
    root_dev = os.lstat(root).st_dev
    seen: set[tuple[int, int]] = set()
    size = 0
    removed = stripped = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=True, followlinks=False):
        keep = []
        for name in dirnames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_dev != root_dev:
                log.warning("not descending into %s: another file system is mounted there", p)
                continue
            if stat.S_ISDIR(st.st_mode):
                keep.append(name)
            else:  # a symlink to a directory: os.walk lists it here
                size += st.st_size
        dirnames[:] = keep
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.unlink(p)
                removed += 1
                continue
            if stat.S_ISREG(mode):
                if mode & (stat.S_ISUID | stat.S_ISGID):
                    os.chmod(p, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
                    stripped += 1
                if (st.st_dev, st.st_ino) in seen:
                    continue
                if st.st_nlink > 1:
                    seen.add((st.st_dev, st.st_ino))
            size += st.st_size
    log.info("rootfs %s: removed %d device nodes, stripped setuid/setgid from %d files",
             root, removed, stripped)
    return size


def _remove_apt_leftovers(root: str) -> None:
    for rel, pattern in (("/var/cache/apt/archives", "*.deb"), ("/var/lib/apt/lists", "*")):
        d = resolve_in_root(root, rel)
        if d is None or not os.path.isdir(d) or os.path.islink(d):
            continue
        for p in glob.glob(os.path.join(glob.escape(d), pattern)):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)


def _ensure_dir(root: str, path: str, mode: int) -> None:
    """Make `root`+`path` a real directory, replacing a symlink or file in the way."""
    cur = root
    parts = [c for c in path.split("/") if c]
    for i, comp in enumerate(parts):
        cur = os.path.join(cur, comp)
        last = i == len(parts) - 1
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            log.warning("replacing %s (not a directory) with a directory", cur)
            os.unlink(cur)
            st = None
        if st is None:
            os.mkdir(cur, 0o755)
            if last:
                os.chmod(cur, mode)


def resolve_in_root(root: str, path: str, *, max_links: int = 40,
                    keep_missing: bool = False) -> str | None:
    """Host path of `path` as seen inside `root` (symlinks resolved relative to root).
    A missing component gives None, or with `keep_missing` the rest of the path kept
    literally (where a new file would go)."""
    todo = [c for c in path.split("/") if c]
    done: list[str] = []
    links = 0
    while todo:
        comp = todo.pop(0)
        if comp == ".":
            continue
        if comp == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, comp)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            if not keep_missing or ".." in todo:
                return None
            return os.path.join(root, *done, comp, *[c for c in todo if c != "."])
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            todo = [c for c in target.split("/") if c] + todo
            continue
        done.append(comp)
    return os.path.join(root, *done)


def is_executable_in_root(root: str, path: str) -> bool:
    host = resolve_in_root(root, path)
    if host is None:
        return False
    try:
        st = os.lstat(host)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def mounts_under(path: str) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    base = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5:
                    continue
                mp = _unescape(fields[4])
                if mp == base or mp.startswith(base.rstrip("/") + "/"):
                    found.append(mp)
    except OSError:
        return []
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _umount_detach(path: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


def remove_tree(path: str) -> None:
    """Remove `path` entirely, detaching mounts below it first; refuse if any remain."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path):  # never resolve a link (to /, say) and detach what is there
        os.unlink(path)
        return
    for mp in mounts_under(path):
        log.warning("detaching leftover mount %s", mp)
        try:
            _umount_detach(mp)
        except OSError as e:
            log.error("%s", e)
    left = mounts_under(path)
    if left:
        raise OSError(errno.EBUSY, f"not removing {path}: still mounted below it: {left}")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
