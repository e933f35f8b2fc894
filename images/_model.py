"""Base-image records: the recipe, its digest, and image.json on disk (images layer).

An image is content-addressed: its id is derived from the sha256 of the canonical JSON of
its recipe (the mirror it was fetched from is not part of the recipe). A finished image is
`images_dir/<image_id>/rootfs` plus `images_dir/<image_id>/image.json`, the metadata file
being written last and atomically, so a directory without it is incomplete.

This module must not import the server (`sandbox_service.server`) or FastAPI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from typing import Any

log = logging.getLogger("sbx.images")

BASE_IMAGE_NAME = "debian_slim"
BASE_PACKAGES = ("ca-certificates", "python-is-python3", "python3", "python3-pip")
# Version of the post-debootstrap clean-up (_rootfs.finalize_rootfs); bump it when that
# changes so that older images are rebuilt rather than reused.
STRIP_VERSION = 1

IMAGE_ID_RE = re.compile(r"^im-[0-9a-f]{20}$")
META_NAME = "image.json"
ROOTFS_NAME = "rootfs"


class ImageBuildError(Exception):
    """An image could not be built. The message says what to do next."""


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    image_id: str        # "im-" + first 20 hex chars of the recipe digest
    digest: str          # "sha256:<hex>" of the recipe's canonical JSON
    rootfs: str          # absolute path of the read-only rootfs directory
    python: str | None   # "/usr/bin/python3" if present in the rootfs, else None
    size_bytes: int


def base_recipe(suite: str = "bookworm") -> dict[str, Any]:
    return {
        "kind": "debootstrap",
        "suite": suite,
        "variant": "minbase",
        "include": sorted(BASE_PACKAGES),
        "strip": STRIP_VERSION,
    }


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def recipe_digest(recipe: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(recipe).encode()).hexdigest()


def image_id_for(digest: str) -> str:
    hexpart = digest.split(":", 1)[-1]
    return "im-" + hexpart[:20]


def format_size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.0f} MB"


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Write `data` to `path` via a temporary file and os.replace (fsynced)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def make_metadata(image_id: str, digest: str, recipe: dict[str, Any], python: str | None,
                  size_bytes: int, *, mirror: str | None = None,
                  source: str = "debootstrap") -> dict[str, Any]:
    return {
        "image_id": image_id,
        "name": BASE_IMAGE_NAME,
        "digest": digest,
        "recipe": recipe,
        "python": python,
        "size_bytes": int(size_bytes),
        "created": time.time(),
        "mirror": mirror,        # informational only: not part of the digest
        "source": source,        # "debootstrap" or "cache"
    }


def read_metadata(path: str) -> dict[str, Any] | None:
    """Parse an image.json; None if it is missing or not a valid record."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable image metadata %s: %s", path, e)
        return None
    if not isinstance(data, dict):
        return None
    digest, recipe = data.get("digest"), data.get("recipe")
    if not isinstance(digest, str) or not isinstance(recipe, dict):
        return None
    if recipe_digest(recipe) != digest:
        log.warning("ignoring image metadata %s: digest does not match its recipe", path)
        return None
    return data


def load_image(image_dir: str) -> BuiltImage | None:
    """The finished image in `image_dir`, or None if it is absent or incomplete."""
    image_id = os.path.basename(os.path.normpath(image_dir))
    if not IMAGE_ID_RE.match(image_id):
        return None
    data = read_metadata(os.path.join(image_dir, META_NAME))
    if data is None or image_id_for(data["digest"]) != image_id:
        return None
    rootfs = os.path.join(os.path.abspath(image_dir), ROOTFS_NAME)
    if not os.path.isdir(rootfs) or os.path.islink(rootfs):
        return None
    python = data.get("python")
    return BuiltImage(
        image_id=image_id,
        digest=data["digest"],
        rootfs=rootfs,
        python=python if isinstance(python, str) else None,
        size_bytes=int(data.get("size_bytes") or 0),
    )

