"""Local files for image builds: walk, filter, hash (public layer, stdlib only).

`add_local_file` / `add_local_dir` / `add_local_python_source` / Dockerfile COPY record
*what* to add; the walk and sha256 happen when the image is built, so a file edited between
two builds changes the layer's cache key and only that layer (and those after it) rebuild.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib.util
import os
import stat
from typing import Any, Callable, Sequence

from .wire import errors as E

Ignore = Sequence[str] | Callable[[str], bool] | None
DEFAULT_PY_IGNORE = ("__pycache__", "*.pyc", "*.pyo", ".git", ".venv", "*.egg-info")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class LocalAdd:
    """One add: a file or a directory, copied to `remote` in the image."""

    local: str
    remote: str
    ignore: Any = None          # tuple of patterns or a callable(relative path) -> bool
    mode: int | None = None     # Dockerfile COPY --chmod


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _ignored(rel: str, ignore: Any) -> bool:
    if not ignore:
        return False
    if callable(ignore):
        return bool(ignore(rel))
    name = rel.rsplit("/", 1)[-1]
    for pat in ignore:
        pat = pat.rstrip("/")
        if fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(name, pat) \
                or fnmatch.fnmatchcase(rel, pat.lstrip("/")) or rel.startswith(pat.strip("/") + "/"):
            return True
    return False


def collect(adds: Sequence[LocalAdd]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(entries for a `files` step, {sha256: local path}) for the adds, in order."""
    entries: list[dict[str, Any]] = []
    blobs: dict[str, str] = {}

    def add_file(path: str, remote: str, st: os.stat_result, mode: int | None) -> None:
        if stat.S_ISLNK(st.st_mode):
            entries.append({"path": remote, "type": "symlink", "target": os.readlink(path),
                            "mode": 0o777})
            return
        if not stat.S_ISREG(st.st_mode):
            return  # sockets, fifos, devices: never copied
        digest = sha256_file(path)
        blobs[digest] = path
        entries.append({"path": remote, "type": "file", "sha256": digest,
                        "mode": mode if mode is not None else stat.S_IMODE(st.st_mode)})

    for add in adds:
        try:
            st = os.stat(add.local)
        except FileNotFoundError:
            raise E.InvalidRequestError(f"local path {add.local!r} does not exist") from None
        if not stat.S_ISDIR(st.st_mode):
            add_file(add.local, add.remote, os.lstat(add.local), add.mode)
            continue
        root = add.local
        entries.append({"path": add.remote, "type": "dir",
                        "mode": add.mode if add.mode is not None else stat.S_IMODE(st.st_mode)})
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            keep = []
            for name in sorted(dirnames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if _ignored(rel.replace(os.sep, "/"), add.ignore):
                    continue
                p = os.path.join(dirpath, name)
                lst = os.lstat(p)
                remote = add.remote.rstrip("/") + "/" + rel.replace(os.sep, "/")
                if stat.S_ISLNK(lst.st_mode):
                    add_file(p, remote, lst, None)
                    continue
                entries.append({"path": remote, "type": "dir",
                                "mode": add.mode if add.mode is not None else stat.S_IMODE(lst.st_mode)})
                keep.append(name)
            dirnames[:] = keep
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if _ignored(rel.replace(os.sep, "/"), add.ignore):
                    continue
                p = os.path.join(dirpath, name)
                add_file(p, add.remote.rstrip("/") + "/" + rel.replace(os.sep, "/"),
                         os.lstat(p), add.mode)
    if not entries:
        raise E.InvalidRequestError("nothing to add: every local file was ignored")
    return entries, blobs


def python_source(module: str, ignore: Ignore) -> LocalAdd:
    """Where `import module` finds its source locally, and where it goes in the image
    (/root, which is on the image's PYTHONPATH, like Modal)."""
    if not module or not all(p.isidentifier() for p in module.split(".")):
        raise E.InvalidRequestError(f"{module!r} is not a module name")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise E.InvalidRequestError(f"module {module!r} is not importable here: check the name "
                                    "and that you run from the project's directory")
    ign = tuple(DEFAULT_PY_IGNORE) if ignore is None else ignore
    top = module.replace(".", "/")
    if spec.submodule_search_locations:
        return LocalAdd(list(spec.submodule_search_locations)[0], f"/root/{top}", ign)
    if not (spec.origin or "").endswith(".py"):
        raise E.InvalidRequestError(f"module {module!r} is not Python source ({spec.origin})")
    return LocalAdd(spec.origin, f"/root/{top}.py")
