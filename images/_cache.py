"""The optional tarball cache of built images, for CI (images layer).

When `SBX_IMAGE_CACHE` names a directory, a successful build also leaves
`$SBX_IMAGE_CACHE/<image_id>.tar` (an uncompressed tar of the rootfs, numeric owners) and
`<image_id>.json` (its image.json) there; a later build of the same recipe unpacks the
tarball instead of running debootstrap. Both files are written via a temporary name and
os.replace, the json last, so a reader never sees a half-written entry. Any cache problem
only costs a real build: it is logged, never raised.

This module must not import the server (`sandbox_service.server`) or FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import Any

from runtimes import run_command

from ._model import read_metadata, write_json_atomic

TAR_TIMEOUT_S = 1800.0  # a base image is a few hundred MB

log = logging.getLogger("sbx.images")

def cache_paths(cache_dir: str, image_id: str) -> tuple[str, str]:
    return (os.path.join(cache_dir, image_id + ".tar"),
            os.path.join(cache_dir, image_id + ".json"))


async def _tar(*args: str) -> tuple[int, str]:
    res = await run_command(["tar", "--numeric-owner", *args], check=False, merge_stderr=True,
                            timeout_s=TAR_TIMEOUT_S)
    return (res.returncode if res.returncode is not None else -1), res.out.strip()


async def restore_from_cache(cache_dir: str, image_id: str, digest: str,
                             target: str) -> dict[str, Any] | None:
    """Unpack the cached rootfs for `digest` into `target` (created here).

    Returns the cached metadata, or None when there is no usable entry; on failure the
    caller removes `target` and builds for real.
    """
    tar_path, json_path = cache_paths(cache_dir, image_id)
    if not (os.path.isfile(tar_path) and os.path.isfile(json_path)):
        return None
    meta = await asyncio.to_thread(read_metadata, json_path)
    if meta is None or meta.get("digest") != digest:
        log.warning("image cache entry %s does not match digest %s: ignoring it",
                    json_path, digest)
        return None
    os.makedirs(target, mode=0o755)
    rc, out = await _tar("-xpf", tar_path, "-C", target)
    if rc != 0:
        log.warning("unpacking cached image %s failed (rc=%d): %s", tar_path, rc, out[-2000:])
        return None
    log.info("restored %s from cache %s", image_id, tar_path)
    return meta


async def save_to_cache(cache_dir: str, image_id: str, rootfs: str,
                        meta: dict[str, Any]) -> bool:
    """Store a finished rootfs and its metadata in the cache; False if that failed."""
    tar_path, json_path = cache_paths(cache_dir, image_id)
    existing = await asyncio.to_thread(read_metadata, json_path)
    if existing is not None and existing.get("digest") == meta.get("digest") \
            and os.path.isfile(tar_path):
        return True
    tmp = f"{tar_path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.makedirs(cache_dir, exist_ok=True)
        rc, out = await _tar("-C", rootfs, "-cf", tmp, ".")
        if rc != 0:
            log.warning("caching image %s failed (tar rc=%d): %s", image_id, rc, out[-2000:])
            return False
        os.replace(tmp, tar_path)
        await asyncio.to_thread(write_json_atomic, json_path, meta)
    except OSError as e:
        log.warning("caching image %s in %s failed: %s", image_id, cache_dir, e)
        return False
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove %s: %s", tmp, e)
    log.info("cached image %s as %s", image_id, tar_path)
    return True
