"""The content-addressed store of built images and the base-image build (images layer).

Layout of `images_dir`:
  <image_id>/rootfs       the read-only rootfs shared by every sandbox of that image
  <image_id>/image.json   metadata, written last: a directory without it is incomplete
  .tmp-<random>/          a build in progress; renamed to <image_id>/ only on success
  .lock-<digest prefix>   flock(2) target serialising builds of one recipe across processes

Concurrent `ensure_base` calls in one process build once (an asyncio.Lock per recipe
digest); across processes the flock does the same, taken in a worker thread so the event
loop never blocks. Whoever gets the lock second finds the finished image and returns it.

This module must not import the server (`sandbox_service.server`) or FastAPI.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import time
from typing import Any, Callable

from ._cache import restore_from_cache, save_to_cache
from ._debootstrap import run_debootstrap
from ._mirror import resolve_mirror
from ._model import (
    BASE_IMAGE_NAME,
    IMAGE_ID_RE,
    META_NAME,
    ROOTFS_NAME,
    BuiltImage,
    base_recipe,
    format_size,
    image_id_for,
    load_image,
    make_metadata,
    recipe_digest,
    write_json_atomic,
)
from ._rootfs import finalize_rootfs, remove_tree

log = logging.getLogger("sbx.images")

STALE_TMP_SECONDS = 3600.0
Progress = Callable[[str], None]


class ImageStore:
    """Built images under `images_dir`; builds the base image on first need."""

    def __init__(self, images_dir: str, *, mirror: str | None = None,
                 suite: str = "bookworm", cache_dir: str | None = None):
        """`mirror`: debootstrap's mirror (default: the host's apt mirror for the suite);
        `cache_dir`: where base image tarballs are kept between stores (None: no cache)."""
        self.images_dir = os.path.abspath(images_dir)
        self.cache_dir = os.path.abspath(cache_dir) if cache_dir else None
        self.suite = suite
        self._mirror = mirror
        self._locks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}

    # -- reading -------------------------------------------------------------------------

    def get(self, image_id: str) -> BuiltImage | None:
        """The finished image `image_id`, or None (unknown, malformed id or incomplete)."""
        if not isinstance(image_id, str) or not IMAGE_ID_RE.match(image_id):
            return None
        return load_image(os.path.join(self.images_dir, image_id))

    def list(self) -> list[BuiltImage]:
        """Every finished image, oldest first; incomplete directories are skipped."""
        try:
            names = os.listdir(self.images_dir)
        except FileNotFoundError:
            return []
        found: list[tuple[float, BuiltImage]] = []
        for name in names:
            image = self.get(name)
            if image is None:
                continue
            try:
                when = os.stat(os.path.join(self.images_dir, name, META_NAME)).st_mtime
            except OSError:
                when = 0.0
            found.append((when, image))
        found.sort(key=lambda t: (t[0], t[1].image_id))
        return [image for _, image in found]

    # -- building ------------------------------------------------------------------------

    async def ensure_base(self, progress: Progress | None = None, *,
                          suite: str | None = None) -> BuiltImage:
        """The base image (debian_slim of `suite`, by default the store's), built once if it
        is not on disk yet."""
        emit = _emitter(progress)
        recipe = base_recipe(suite or self.suite)
        digest = recipe_digest(recipe)
        image_id = image_id_for(digest)
        image = self.get(image_id)
        if image is not None:
            return image
        async with self._lock_for(digest):
            image = self.get(image_id)
            if image is not None:
                return image
            await asyncio.to_thread(os.makedirs, self.images_dir, 0o755, True)
            lock_path = os.path.join(self.images_dir, ".lock-" + digest.split(":")[1][:16])
            fd = await _flock(lock_path, emit)
            try:
                image = self.get(image_id)
                if image is not None:  # another process built it while we waited
                    return image
                return await self._build(recipe, digest, image_id, emit)
            finally:
                os.close(fd)  # releases the flock

    def _lock_for(self, digest: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        entry = self._locks.get(digest)
        if entry is None or entry[0] is not loop:
            entry = (loop, asyncio.Lock())
            self._locks[digest] = entry
        return entry[1]

    async def _build(self, recipe: dict[str, Any], digest: str, image_id: str,
                     emit: Progress) -> BuiltImage:
        final = os.path.join(self.images_dir, image_id)
        await asyncio.to_thread(self._clean_leftovers, final)
        tmp: str | None = os.path.join(self.images_dir, ".tmp-" + secrets.token_hex(8))
        os.mkdir(tmp, 0o755)
        rootfs = os.path.join(tmp, ROOTFS_NAME)
        cache = self.cache_dir
        started = time.monotonic()
        try:
            cached = None
            if cache:
                try:
                    cached = await restore_from_cache(cache, image_id, digest, rootfs)
                except OSError as e:
                    log.warning("image cache %s unusable: %s", cache, e)
                if cached is None and os.path.lexists(rootfs):
                    await asyncio.to_thread(remove_tree, rootfs)
            if cached is not None:
                emit(f"base image {BASE_IMAGE_NAME} restored from cache {cache}")
                mirror, source = cached.get("mirror"), "cache"
            else:
                mirror, source = resolve_mirror(self._mirror, recipe["suite"]), "debootstrap"
                emit(f"building base image {BASE_IMAGE_NAME} (debootstrap {recipe['suite']}, "
                     f"~1 min, once)...")
                await run_debootstrap(recipe, rootfs, mirror, emit)
            python, size = await asyncio.to_thread(finalize_rootfs, rootfs)
            meta = make_metadata(image_id, digest, recipe, python, size,
                                 mirror=mirror, source=source)
            await asyncio.to_thread(write_json_atomic, os.path.join(tmp, META_NAME), meta)
            os.rename(tmp, final)
            tmp = None
        finally:
            if tmp is not None:
                log.info("build of %s did not finish: removing %s", image_id, tmp)
                try:
                    await asyncio.shield(asyncio.to_thread(remove_tree, tmp))
                except Exception as e:  # never hide the build's own error
                    log.error("cannot remove %s: %s", tmp, e)
        log.info("built image %s (%s) from %s in %.1fs", image_id, format_size(size), source,
                 time.monotonic() - started)
        if cache and source == "debootstrap":
            emit(f"saving base image to cache {cache}")
            try:
                await save_to_cache(cache, image_id, os.path.join(final, ROOTFS_NAME), meta)
            except Exception as e:  # the cache is an optimisation only
                log.warning("caching image %s failed: %s", image_id, e)
        image = self.get(image_id)
        if image is None:  # pragma: no cover - we just wrote it
            raise RuntimeError(f"image {image_id} vanished right after its build")
        emit(f"base image ready: {image_id} ({format_size(size)})")
        return image

    def _clean_leftovers(self, final: str) -> None:
        """Remove an incomplete `final` and build directories abandoned over an hour ago."""
        if os.path.lexists(final) and load_image(final) is None:
            log.warning("removing incomplete image directory %s", final)
            remove_tree(final)
        now = time.time()
        for name in os.listdir(self.images_dir):
            if not name.startswith(".tmp-"):
                continue
            path = os.path.join(self.images_dir, name)
            try:
                age = now - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            if age > STALE_TMP_SECONDS:
                log.warning("removing abandoned build directory %s (%.0f min old)",
                            path, age / 60)
                try:
                    remove_tree(path)
                except OSError as e:
                    log.error("cannot remove %s: %s", path, e)


async def _flock(path: str, emit: Progress) -> int:
    """An fd holding an exclusive flock on `path`; close it to release."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    except BaseException:
        os.close(fd)
        raise
    emit("waiting for another process that is building the base image...")
    fut = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
    try:
        await asyncio.shield(fut)
    except BaseException:
        # The thread may still be blocked in flock: close the fd (dropping any lock it
        # gets) only once it returns.
        if fut.done():
            os.close(fd)
        else:
            fut.add_done_callback(lambda _f: os.close(fd))
        raise
    return fd


def _emitter(progress: Progress | None) -> Progress:
    def emit(line: str) -> None:
        log.info("%s", line)
        if progress is not None:
            try:
                progress(line)
            except Exception:  # a broken progress sink must not break the build
                log.exception("progress callback failed")
    return emit
