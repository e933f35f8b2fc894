"""Reading an image's own idea of users and paths, safely, from the host (images layer).

The rootfs is untrusted content (a registry image, a snapshot of a sandbox): paths are
resolved inside it with chroot semantics (`resolve_in_root`), never by following its
symlinks on the host, and files are read with a size cap. Blocking; must not import the
server or `sandbox_service`.
"""

from __future__ import annotations

import os
import stat

from ._model import ImageBuildError
from ._rootfs import resolve_in_root

MAX_DB_BYTES = 4 << 20


def canonical_in_root(root: str, path: str) -> str:
    """`path` as the image resolves it: symlinks of existing components followed inside
    `root`, missing components kept literally. Always absolute and inside the image."""
    host = resolve_in_root(root, path, keep_missing=True)
    if host is None:
        raise ImageBuildError(f"{path}: too many symbolic links, or '..' after a missing "
                              "directory; use an absolute path without '..'")
    rel = os.path.relpath(host, root)
    return "/" if rel == "." else "/" + rel


def _read_db(root: str, path: str) -> list[list[str]]:
    host = resolve_in_root(root, path)
    if host is None:
        return []
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        data = os.read(fd, MAX_DB_BYTES)
    finally:
        os.close(fd)
    return [line.split(":") for line in data.decode(errors="replace").splitlines()
            if line and not line.startswith("#")]


def resolve_user(root: str, user: str | None) -> tuple[int, int]:
    """(uid, gid) for a Dockerfile-style USER: name, uid, name:group or uid:gid."""
    if not user or user in ("root", "0", "0:0", "root:root"):
        return 0, 0
    name, _, group = user.partition(":")
    passwd = _read_db(root, "/etc/passwd")
    if name.isdigit():  # a uid the image does not know gets group 0, as in Docker
        uid = int(name)
        gid = next((int(f[3]) for f in passwd if len(f) > 3 and f[2] == name and f[3].isdigit()),
                   0)
    else:
        entry = next((f for f in passwd if len(f) > 3 and f[0] == name), None)
        if entry is None or not entry[2].isdigit() or not entry[3].isdigit():
            raise ImageBuildError(f"user {name!r} does not exist in the image: create it first "
                                  "(run_commands('useradd ...')) or use a numeric uid")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((f for f in _read_db(root, "/etc/group") if len(f) > 2 and f[0] == group), None)
            if g is None or not g[2].isdigit():
                raise ImageBuildError(f"group {group!r} does not exist in the image")
            gid = int(g[2])
    return uid, gid


def user_home(root: str, uid: int) -> str | None:
    """The home directory /etc/passwd gives `uid`, if any."""
    entry = next((f for f in _read_db(root, "/etc/passwd") if len(f) > 5 and f[2] == str(uid)), None)
    return entry[5] if entry and entry[5].startswith("/") else None
