"""Images as the server sees them: records in the store, builds, blobs, snapshots, gc
(server layer).

The images layer does the file-system work (layers, builds, registry pulls); this module
keeps image records (id, digest, top layer, config) in the store so they survive restarts,
resolves what a sandbox boots from, and decides what garbage collection may delete: never
a layer of an image record, of a running sandbox or of a build in progress. Must not import
FastAPI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import secrets
import time
from typing import Any, AsyncIterator, Callable

from images import Builder, BuildSettings, Diff, ImageStore, LayerStore, empty_config
from images import ImageBuildError as LayerBuildError
from runtimes import ExportError
from security import ensure_key_file

from ...wire import ImageBuildRequest, is_id, new_id
from ...wire import errors as E
from ._records import SandboxRecord
from ._sdk_mount import build_sdk_mount
from ._secrets import SecretService
from ._store import Store

log = logging.getLogger("sbx.server.images")

BASE_NAMES = ("debian_slim", "debian-slim", "base")
BLOB_GRACE_S = 3600.0


@dataclasses.dataclass(frozen=True)
class ResolvedImage:
    """What a sandbox boots from."""

    image_id: str
    rootfs: str
    layer: str | None
    config: dict[str, Any]


class ImageService:
    def __init__(self, *, base: ImageStore, runtime: Any, store: Store, home: str,
                 build: BuildSettings | None = None, wheel_cache: str | None = None):
        self.base = base
        self.store = store
        self.runtime = runtime
        self.secrets = SecretService(store, home)
        self.home = home
        self.wheel_cache = wheel_cache
        self.blobs_dir = os.path.join(home, "blobs")
        os.makedirs(self.blobs_dir, mode=0o700, exist_ok=True)
        self.layers = LayerStore(os.path.join(base.images_dir, "layers"))
        self.builder = Builder(layers=self.layers, base=base, runtime=runtime,
                               blobs_dir=self.blobs_dir, settings=build,
                               resolve_image=self._layer_of,
                               secret_key=_secret_key(os.path.join(home, "build.key")))
        self._builds: dict[str, asyncio.Task] = {}
        self._record_lock = asyncio.Lock()

    async def start(self) -> None:
        """Remove layer directories a crash left half-made (after the runtime reaped any
        build container still writing into one)."""
        try:
            await asyncio.to_thread(self.layers.clean_tmp)
        except OSError as e:
            log.error("could not clean incomplete layers under %s: %s", self.layers.dir, e)

    async def stop(self) -> None:
        """Cancel builds in progress and wait for them to clean up after themselves."""
        tasks = list(self._builds.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    # ---- resolving ----------------------------------------------------------------------
    async def resolve(self, ref: str) -> ResolvedImage:
        if ref in BASE_NAMES:
            try:
                base = await self.base.ensure_base(progress=lambda line: log.info("image: %s", line))
            except Exception as e:
                raise E.ImageBuildError(f"building the base image failed: {e}") from None
            return ResolvedImage(base.image_id, base.rootfs, None, empty_config())
        base = self.base.get(ref) if is_id("image", ref) else None
        if base is not None:
            return ResolvedImage(base.image_id, base.rootfs, None, empty_config())
        rec = await self.get(ref)
        layer = self.layers.get(rec["top"])
        if layer is None:
            raise E.NotFoundError(f"image {ref} has lost its layers (removed from disk): build "
                                  "it again")
        return ResolvedImage(rec["image_id"], layer.rootfs, layer.key, rec["config"])

    async def get(self, image_id: str) -> dict[str, Any]:
        rec = await self.store.get_image(image_id) if is_id("image", image_id) else None
        if rec is None:
            raise E.NotFoundError(f"no image {image_id!r}: `sbx image ls` lists the images; "
                                  "build one with Image...build()")
        return rec

    async def _layer_of(self, image_id: str) -> tuple[str, dict[str, Any]]:
        base = self.base.get(image_id)
        if base is not None:  # a base image (of its own Debian release) as a layer
            return (await self.builder.base_layer(base)).key, empty_config()
        rec = await self.get(image_id)
        return rec["top"], rec["config"]

    async def list(self, owner: str = "admin") -> list[dict[str, Any]]:
        recs = await self.store.list_images()
        return recs if owner == "admin" else [r for r in recs if owner in _owners(r)]

    # ---- building -----------------------------------------------------------------------
    def start_build(self, req: ImageBuildRequest, emit: Callable[[str], None],
                    owner: str = "admin") -> asyncio.Task:
        """Build in a task of its own: a client that goes away does not cancel a build other
        requests may be waiting on."""
        steps = [s.model_dump() for s in req.steps]
        task = asyncio.create_task(self._build(steps, req.force_build, emit, owner))
        key = secrets.token_hex(8)
        self._builds[key] = task
        task.add_done_callback(lambda _t: self._builds.pop(key, None))
        return task

    async def _build(self, steps: list[dict[str, Any]], force: bool,
                     emit: Callable[[str], None], owner: str = "admin") -> dict[str, Any]:
        if steps[0]["kind"] == "image":
            image_id = steps[0]["image_id"]
            if not is_id("image", image_id):
                raise E.InvalidRequestError(f"{image_id!r} is not an image id (im-...)")
            if owner != "admin" and self.base.get(image_id) is None \
                    and owner not in _owners(await self.get(image_id)):
                raise E.NotFoundError(f"no image {image_id!r}: `sbx image ls` lists the "
                                      "images; build one with Image...build()")
        for step in steps:  # named secrets become secret_env: HMAC'd in keys, never logged
            if step["kind"] == "function":  # run_function imports the SDK in the build
                step["sdk_dirs"] = list(await asyncio.to_thread(build_sdk_mount, self.home,
                                                             self.wheel_cache))
            names = step.pop("secret_names", None)
            if names:
                step["secret_env"] = {**await self.secrets.resolve(owner, names), **step["secret_env"]}
        t0 = time.monotonic()
        try:
            res = await self.builder.build(steps, force_build=force, emit=emit)
        except LayerBuildError as e:
            raise E.ImageBuildError(str(e)) from None
        try:
            return await self._record(res, steps, emit, t0, owner)
        finally:
            self.layers.unpin(res.layers)

    async def _record(self, res: Any, steps: list[dict[str, Any]], emit: Callable[[str], None],
                      t0: float, owner: str = "admin") -> dict[str, Any]:
        async with self._record_lock:  # one record per digest, however many builds raced
            rec = await self.store.get_image_by_digest(res.digest)
            if rec is None:
                sizes = [self.layers.disk_usage(k) for k in res.layers]
                rec = {"image_id": new_id("image"), "digest": res.digest,
                       "created_at": time.time(), "top": res.top.key, "layers": res.layers,
                       "config": res.config, "size_bytes": sum(sizes),
                       "python": res.top.python, "source": steps[0]["kind"],
                       "owners": [owner]}
                await self.store.put_image(rec)
            elif owner not in _owners(rec):  # the same image, now also this principal's
                rec = {**rec, "owners": [*_owners(rec), owner]}
                await self.store.put_image(rec)
        rec = {**rec, "built_layers": res.built}
        emit(f"image {rec['image_id']} ready ({res.built} of {len(res.layers)} layers built, "
             f"{time.monotonic() - t0:.1f}s)")
        return rec

    async def remove(self, image_id: str, owner: str = "admin") -> None:
        rec = await self.get(image_id)
        others = [o for o in _owners(rec) if o != owner]
        if owner != "admin" and others:  # still someone else's: only this principal lets go
            await self.store.put_image({**rec, "owners": others})
            return
        await self.store.delete_image(image_id)

    async def gc(self) -> dict[str, int]:
        """Remove layers no image, sandbox or build uses, and stale uploaded blobs."""
        keep: set[str] = set(self.layers.building) | set(self.layers.pinned)
        for rec in await self.store.list_images():
            keep.update(self.layers.chain(rec["top"]))
        base_keys = set()
        for key in self.layers.keys():  # base layers are cheap (hard links) and reused: keep
            layer = self.layers.get(key)
            if layer and layer.parent is None and str(layer.meta.get("source", "")).startswith("debian_slim"):
                base_keys.add(key)
        keep |= base_keys
        removed = freed = 0
        for key in self.layers.keys():
            if key in keep:
                continue
            freed += self.layers.disk_usage(key)
            await asyncio.to_thread(self.layers.remove, key)
            removed += 1
        await asyncio.to_thread(self._gc_blobs)
        log.info("image gc: removed %d layers (%d bytes)", removed, freed)
        return {"removed_layers": removed, "freed_bytes": freed,
                "kept_layers": len(self.layers.keys())}

    def _gc_blobs(self) -> None:
        now = time.time()
        for name in os.listdir(self.blobs_dir):
            path = os.path.join(self.blobs_dir, name)
            try:
                if now - os.lstat(path).st_mtime > BLOB_GRACE_S:
                    os.unlink(path)
            except FileNotFoundError:
                pass

    def disk_bytes(self) -> int:
        return sum(self.layers.disk_usage(k) for k in self.layers.keys())

    # ---- blobs --------------------------------------------------------------------------
    def missing_blobs(self, digests: list[str]) -> list[str]:
        return [d for d in dict.fromkeys(digests)
                if not os.path.isfile(os.path.join(self.blobs_dir, d))]

    async def put_blob(self, digest: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        final = os.path.join(self.blobs_dir, digest)
        tmp = f"{final}.tmp-{secrets.token_hex(6)}"
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise E.PayloadTooLargeError(
                            f"file is larger than the upload limit of {max_bytes} bytes")
                    h.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
            if h.hexdigest() != digest:
                raise E.InvalidRequestError(f"uploaded content has sha256 {h.hexdigest()}, not "
                                            f"{digest}: the file changed during upload; retry")
            os.chmod(tmp, 0o600)
            os.replace(tmp, final)
            tmp = ""
        finally:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
        return size

    # ---- snapshots ----------------------------------------------------------------------
    async def snapshot(self, sandbox_id: str, rec: SandboxRecord,
                       rootfs: str) -> dict[str, Any]:
        """A new image from a running sandbox's writes on top of the image it booted."""
        if rec.layer:
            parent_key, config = rec.layer, rec.image_config or empty_config()
        else:
            base = self.base.get(rec.image_id or "")
            if base is None:
                raise E.ConflictError("the sandbox's base image is gone; cannot snapshot")
            parent_key, config = (await self.builder.base_layer(base)).key, empty_config()
        pinned = self.layers.chain(parent_key)
        self.layers.pin(pinned)
        try:
            return await self._snapshot(sandbox_id, parent_key, config, rootfs,
                                        rec.owner)
        finally:
            self.layers.unpin(pinned)

    async def _snapshot(self, sandbox_id: str, parent_key: str, config: dict[str, Any],
                        rootfs: str, owner: str) -> dict[str, Any]:
        parent = self.layers.get(parent_key)
        if parent is None:
            raise E.ConflictError("the sandbox's image layers were removed; cannot snapshot")
        stats: dict[str, Any] = {}

        async def produce(tmp: str) -> Diff:
            res = await self.runtime.export_changes(sandbox_id, rootfs, os.path.join(tmp, "diff"))
            stats.update(changed=res.changed, bytes=res.bytes)
            return Diff(deleted=res.deleted, info={"source": f"snapshot:{sandbox_id}"})

        key = hashlib.sha256(f"snapshot:{sandbox_id}:{secrets.token_hex(16)}".encode()).hexdigest()
        try:
            layer, _ = await self.layers.ensure(key, parent, produce, what=f"snapshot of {sandbox_id}",
                                                emit=lambda line: None)
        except LayerBuildError as e:
            raise E.ImageBuildError(str(e)) from None
        except ExportError as e:
            cls = E.PayloadTooLargeError if "too large" in str(e) else E.ImageBuildError
            raise cls(f"the snapshot was refused: {e}") from None
        self.layers.pin([layer.key])  # until the record below exists
        try:
            return await self._record_snapshot(sandbox_id, layer, key, config, stats, owner)
        finally:
            self.layers.unpin([layer.key])

    async def _record_snapshot(self, sandbox_id: str, layer: Any, key: str,
                               config: dict[str, Any], stats: dict[str, Any],
                               owner: str) -> dict[str, Any]:
        chain = self.layers.chain(layer.key)[::-1]
        digest = "sha256:" + key
        image = {"image_id": new_id("image"), "digest": digest, "created_at": time.time(),
                 "top": layer.key, "layers": chain, "config": config,
                 "size_bytes": sum(self.layers.disk_usage(k) for k in chain),
                 "python": layer.python, "source": f"snapshot:{sandbox_id}",
                 "owners": [owner]}
        await self.store.put_image(image)
        log.info("snapshot of %s: image %s (%s entries, %s bytes)", sandbox_id,
                 image["image_id"], stats.get("changed"), stats.get("bytes"))
        return image


def _secret_key(path: str) -> bytes:
    """A server-side key (0600, made once) for the HMAC of build secrets in cache keys."""
    return ensure_key_file(path, lambda: secrets.token_bytes(32))


def _owners(rec: dict[str, Any]) -> list[str]:
    return list(rec.get("owners") or ["admin"])
