"""Wire models of Volumes (wire layer): Modal's `modal.Volume`.

A volume is a directory tree that functions, classes and sandboxes mount
(`volumes={"/data": vol}`) and the SDK reads and writes from outside. Paths inside a
volume are relative to its root (a leading "/" is allowed and means the root). Both ends
import this module; it imports pydantic and the stdlib only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ._model import _Model

MAX_VOLUME_PATH = 4096
MAX_VOLUMES_PER_CONTAINER = 16
# Mount paths a volume may not take (the runtime's own and the kernel's), and the trees it
# may not go below
RESERVED_MOUNTS = ("/", "/tmp", "/etc/resolv.conf")
RESERVED_TREES = ("/.sbx", "/proc", "/sys", "/dev")
VolumeFileType = Literal["file", "directory", "symlink", "other"]


def volume_path_parts(path: str) -> list[str]:
    """The components of a path inside a volume: "" and "/" are the root; `..`, NUL and
    over-long paths are refused (ValueError)."""
    if len(path) > MAX_VOLUME_PATH or "\0" in path:
        raise ValueError(f"volume path {path[:80]!r} is not valid: at most {MAX_VOLUME_PATH} "
                         "characters, no NUL")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"volume path {path!r} has '..': name paths from the volume's root")
    return parts


def check_mount_path(path: str) -> str:
    """Where a volume may be mounted: an absolute path, not the root and not one of the
    runtime's own directories."""
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"mount path {path!r} must be absolute (start with /), without NUL")
    norm = "/" + "/".join(p for p in path.split("/") if p not in ("", "."))
    if ".." in norm.split("/"):
        raise ValueError(f"mount path {path!r} has '..'")
    for r in (*RESERVED_MOUNTS, *RESERVED_TREES):
        if norm == r or (r in RESERVED_TREES and norm.startswith(r + "/")):
            raise ValueError(f"a volume cannot be mounted at {path!r} ({r} belongs to the "
                             "runtime): pick another path, e.g. /data or /root/.cache")
    return norm


class VolumeMount(_Model):
    """One volume in a container: `volumes={"/data": vol}`."""

    volume_id: str = Field(..., min_length=1, max_length=64)
    path: str = Field(..., max_length=1024, description="absolute mount path in the container")
    read_only: bool = False

    _v_path = field_validator("path")(lambda cls, v: check_mount_path(v))


def check_mounts(mounts: list[VolumeMount]) -> list[VolumeMount]:
    """At most MAX_VOLUMES_PER_CONTAINER, and no path twice or inside another."""
    if len(mounts) > MAX_VOLUMES_PER_CONTAINER:
        raise ValueError(f"{len(mounts)} volumes; a container may mount at most "
                         f"{MAX_VOLUMES_PER_CONTAINER}")
    paths = sorted(m.path for m in mounts)
    for a, b in zip(paths, paths[1:]):
        if a == b or b.startswith(a + "/"):
            raise ValueError(f"volume mount paths {a!r} and {b!r} overlap: mount each volume "
                             "at its own path")
    return mounts


class VolumeFile(_Model):
    """One entry of a listing (Modal's FileEntry)."""

    path: str
    type: VolumeFileType
    size: int
    mtime: float
    mode: int


class VolumeListing(_Model):
    entries: list[VolumeFile]
    truncated: bool = False


class VolumeCopy(_Model):
    src_paths: list[str] = Field(..., min_length=1, max_length=10_000)
    dst_path: str = Field(..., max_length=MAX_VOLUME_PATH)
    recursive: bool = False


class VolumeUsage(_Model):
    """The principal's volume space: every volume of one principal shares its quota."""

    used_bytes: int
    quota_bytes: int
    enforced: bool = Field(True, description="False where the host cannot enforce a quota")
