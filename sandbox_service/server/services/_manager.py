"""Sandbox lifecycle: create, exec, files, timeouts, monitor, restart recovery (server layer).

Reaches containers only through `runtimes.Runtime`; persists through `Store`. Must not
import FastAPI (routers translate HTTP to calls here) or a concrete runtime backend.

Exit codes (decided by `runtimes.exit_codes`, the agent's exits.py): main command exit ->
its code ("exited"); terminate -> 137 ("terminated");
lifetime timeout -> 124 ("timeout"); idle timeout -> 124 ("idle_timeout"); memory limit ->
137 ("oom"); the sandbox died on its own (e.g. `kill -9 1`) -> 137 ("failed"); its agent
stopped answering and could not be revived (`Runtime.probe`) -> 137 ("failed", and callers
get SandboxUnresponsiveError).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from typing import Any

from images import ImageBuildError, resolve_user, user_home
from runtimes import (
    AgentError,
    AgentUnavailable,
    AgentUnresponsive,
    ContainerSpec,
    ExecSpec,
    ExitFrame,
    Runtime,
    exit_codes,
)
from security import BLOCKED_V4, ResourcePolicy

from ...wire import SandboxCreate, is_id, new_id
from ...wire import errors as E
from ._gpus import GpuService
from ._pool import Profile, WarmPool
from ._records import LIVE_STATES, SandboxRecord
from ._sandbox_io import SandboxIO
from ._secrets import SecretService
from ._store import Store
from ._tunnel_keys import TunnelKeys

log = logging.getLogger("sbx.server.sandboxes")

MAIN_LOG_CAP = 64 * 1024 * 1024
PROBE_INTERVAL_S = 30.0  # how often the monitor checks that a sandbox's agent answers


class _Live:
    """In-memory companion of a sandbox that is creating or running."""

    def __init__(self, rec: SandboxRecord):
        self.rec = rec
        self.done = asyncio.Event()
        self.active_execs = 0
        self.last_activity = time.monotonic()
        self.lock = asyncio.Lock()
        self.main_task: asyncio.Task | None = None
        self.probed_at = time.monotonic()
        self.probe_task: asyncio.Task | None = None
        self.layers: list[str] = []  # the image's layer chain, pinned while it lives

    def touch(self) -> None:
        self.last_activity = time.monotonic()


class SandboxManager(SandboxIO):
    def __init__(self, *, runtime: Runtime, store: Store, images: Any, home: str,
                 policy: ResourcePolicy | None = None, monitor_interval_s: float = 0.5,
                 collector_interval_s: float = 30.0, warm_pool: int = 0,
                 warm_pool_max: int | None = None, warm_pool_memory_mib: int = 1024,
                 max_streams: int = 1024):
        self.runtime = runtime
        self.store = store
        self.images = images
        self.policy = policy or ResourcePolicy()
        self.secrets = SecretService(store, home)
        self.volumes: Any = None  # VolumeService, set by create_app
        self.gpus = GpuService(None, runtime)  # create_app gives it the host's allocator
        self.tunnel_keys = TunnelKeys(home)
        self.logs_dir = os.path.join(home, "logs")
        os.makedirs(self.logs_dir, mode=0o700, exist_ok=True)
        self.monitor_interval_s = monitor_interval_s
        self.collector_interval_s = collector_interval_s
        self._live: dict[str, _Live] = {}
        self.max_streams = max_streams
        self._streams = 0  # agent streams held open for clients (exec, ports, cells)
        self._creates: dict[str, list[float]] = {}  # principal -> create times (last minute)
        self._tasks: list[asyncio.Task] = []
        self._pool = WarmPool(
            runtime, warm_pool, self._pool_spec, max_total=warm_pool_max,
            memory_budget_mib=warm_pool_memory_mib,
            pin=lambda image: self._pin_layers(image.layer),
            unpin=self.images.layers.unpin) if warm_pool > 0 else None

    def _container_spec(self, cid: str, image: Any, env: dict[str, str] | None = None,
                        memory_mib: int | None = None, cpu: float | None = None,
                        egress: bool = False,
                        allowlist: list[str] | None = None,
                        disk_mib: int | None = None,
                        domains: list[str] | None = None,
                        mounts: tuple[tuple[str, str], ...] = (),
                        volumes: tuple[tuple[str, str, bool], ...] = (),
                        gpus: tuple = ()) -> ContainerSpec:
        return ContainerSpec(container_id=cid, rootfs=image.rootfs,
                             env={**image.config.get("env", {}), **(env or {})},
                             egress=egress,
                             egress_allowlist=None if allowlist is None else tuple(allowlist),
                             egress_domains=None if domains is None else tuple(domains),
                             memory_mib=memory_mib or self.policy.default_memory_mib, cpu=cpu,
                             nproc=self.policy.nproc, nofile=self.policy.nofile,
                             disk_mib=disk_mib, mounts=tuple(mounts), volumes=volumes,
                             gpus=gpus)

    def _pool_spec(self, cid: str, image: Any, profile: Profile) -> ContainerSpec:
        """A pooled sandbox: its profile's limits, no network, no volumes, no GPU."""
        return self._container_spec(cid, image, memory_mib=profile.memory_mib,
                                    cpu=profile.cpu, disk_mib=profile.disk_mib)

    def _pin_layers(self, layer: str | None) -> list[str]:
        """Pin an image's layer chain in the one LayerStore, so image GC keeps it while a
        sandbox (live or pooled) uses it; returns what to unpin."""
        layers = self.images.layers.chain(layer) if layer else []
        self.images.layers.pin(layers)
        return layers

    def _known(self) -> set[str]:
        return (set(self._live) | (self._pool.ids() if self._pool else set())
                | set(self.images.builder.active))

    def _register(self, rec: SandboxRecord) -> _Live:
        """Track a creating or running sandbox; its image's layers are pinned in the one
        LayerStore while it lives, so image GC keeps them (no hook between services)."""
        live = self._live[rec.sandbox_id] = _Live(rec)
        live.layers = self._pin_layers(rec.layer)
        return live

    def _unregister(self, live: _Live) -> None:
        self._live.pop(live.rec.sandbox_id, None)
        self.images.layers.unpin(live.layers)
        live.layers = []

    # ---- service lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        await self._recover()
        self._tasks = [asyncio.create_task(self._monitor_loop(), name="sbx-monitor"),
                       asyncio.create_task(self._collector_loop(), name="sbx-collector"),
                       asyncio.create_task(self.prebuild(), name="sbx-prebuild")]

    async def prebuild(self) -> None:
        """Build (or unpack) the base image at startup, with progress in the server log, so
        the first `create` does not pay for it."""
        try:
            image = await self._resolve_image("debian_slim")
        except E.SandboxError as e:
            log.error("%s", e.message)
            return
        if self._pool:
            self._pool.set_default(image, Profile(
                image.image_id, self.policy.memory(None), self.policy.cpu(None),
                self.policy.disk(None, self.runtime.disk_quota_unavailable)))

    async def stop(self) -> None:
        """Stop background work. Running sandboxes keep running for the next server."""
        for t in self._tasks + [lv.main_task for lv in self._live.values() if lv.main_task]:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._pool:
            await self._pool.close()

    async def _recover(self) -> None:
        for rec in await self.store.list_sandboxes(states=LIVE_STATES, limit=100_000):
            cid = rec.sandbox_id
            if rec.state == "running" and await self.runtime.reattach(cid):
                live = self._register(rec)
                if rec.has_command:
                    live.main_task = asyncio.create_task(self._watch_main(live))
                log.info("re-attached sandbox %s", cid)
                continue
            st = await self.runtime.destroy(cid)
            reason = ("the server restarted while it was booting" if rec.state == "creating"
                      else "it stopped while the server was down")
            rec.finish("oom" if st.oom_killed else "lost", exit_codes.KILLED, reason)
            await self.store.put_sandbox(rec)
        await self.runtime.collect(self._known())
        self.gpus.reconcile(set(self._live))

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.monitor_interval_s)
            for live in list(self._live.values()):
                try:
                    await self._check(live)
                except Exception:  # one bad sandbox must not stop the monitor
                    log.exception("monitor: checking %s failed", live.rec.sandbox_id)

    async def _check(self, live: _Live) -> None:
        rec = live.rec
        if rec.state != "running":
            return
        dead_agent = self.runtime.unresponsive(rec.sandbox_id)
        if dead_agent:
            await self._finish(live, "failed", exit_codes.KILLED, dead_agent)
        elif time.time() >= rec.created_at + rec.timeout_s:
            await self._finish(live, "timeout", exit_codes.TIMEOUT, f"it reached its timeout of {rec.timeout_s:g}s")
        elif (rec.idle_timeout_s and live.active_execs == 0
              and time.monotonic() - live.last_activity >= rec.idle_timeout_s):
            await self._finish(live, "idle_timeout", exit_codes.TIMEOUT,
                               f"it was idle for {rec.idle_timeout_s:g}s")
        elif (st := await self.runtime.status(rec.sandbox_id)).oom_killed:
            # the kernel's OOM killer took part of it (on systrap often one process's
            # address-space stub, leaving the rest running): the whole sandbox ends as
            # `oom`, as documented, never a sandbox with a process silently gone
            await self._finish(live, "oom", exit_codes.KILLED, rec.oom_reason())
        elif not st.running:
            await self._finish(live, "failed", exit_codes.KILLED, "the sandbox stopped on its own "
                               "(its init process was killed or it crashed)")
        elif (live.probe_task is None
              and time.monotonic() - live.probed_at >= PROBE_INTERVAL_S):
            live.probe_task = asyncio.create_task(self._probe(live))

    async def _probe(self, live: _Live) -> None:
        """Off the monitor's loop: a check of the agent can take seconds."""
        try:
            await self.runtime.probe(live.rec.sandbox_id)
        except AgentUnresponsive as e:
            await self._finish(live, "failed", exit_codes.KILLED, str(e))
        except AgentUnavailable:
            pass  # the container is gone: the next _check records it
        finally:
            live.probed_at = time.monotonic()
            live.probe_task = None

    async def _collector_loop(self) -> None:
        while True:
            await asyncio.sleep(self.collector_interval_s)
            try:
                await self.runtime.collect(self._known())
            except Exception:
                log.exception("collector failed")

    # ---- create / get / list / terminate / wait ----------------------------------------
    async def create(self, req: SandboxCreate, *, owner: str = "admin",
                     mounts: tuple[tuple[str, str], ...] = ()) -> SandboxRecord:
        """Boot a sandbox. `mounts` (host dir, container path) are read-only binds the
        server adds itself (the SDK for function containers); callers cannot ask for any."""
        for cidr in req.cidr_allowlist or ():  # the wire model made them IPv4 networks
            net = ipaddress.IPv4Network(cidr)
            inside = next((b for b in BLOCKED_V4 if net.subnet_of(ipaddress.IPv4Network(b))), None)
            if inside:
                raise E.InvalidRequestError(
                    f"cidr_allowlist entry {cidr} is inside {inside}, which is always blocked "
                    "(private, loopback, link-local/metadata and reserved ranges, the host and "
                    "other sandboxes are never reachable from a sandbox): remove it")
        try:
            memory = self.policy.memory(req.memory_mib)
            cpu = self.policy.cpu(req.cpu)
            disk = self.policy.disk(req.disk_mib, self.runtime.disk_quota_unavailable)
        except ValueError as e:
            raise E.InvalidRequestError(str(e)) from None
        app = await self.store.get_app(req.app_id) if req.app_id is not None else None
        if req.app_id is not None and (app is None or (
                owner != "admin" and app.owner != owner)):
            raise E.NotFoundError(f"app {req.app_id} does not exist: use App.lookup(name, "
                                  "create_if_missing=True)")
        image = await self._resolve_image(req.image)
        uid, gid, home = await self._image_user(image)
        env = dict(req.env)
        if req.secret_names:  # named secrets: over the image's env, under the sandbox's env=
            env = {**await self.secrets.resolve(owner, req.secret_names), **env}
        if home and "HOME" not in env and "HOME" not in image.config.get("env", {}):
            env["HOME"] = home
        binds = await self.volumes.binds(owner, req.volumes) if req.volumes else ()
        # checked after the last await before the sandbox is registered: no race
        if len(self._live) >= self.policy.max_sandboxes:
            raise E.QuotaExceededError(
                f"{len(self._live)} sandboxes are running, the limit is "
                f"{self.policy.max_sandboxes}: terminate some and retry")
        mine = sum(1 for lv in self._live.values() if lv.rec.owner == owner)
        why = self.policy.admit_create(owner, mine, self._creates.setdefault(owner, []),
                                       time.monotonic())
        if why:
            raise E.QuotaExceededError(why)
        if req.name is not None and any(  # names are unique per owner and app, as Modal's per app
                lv.rec.name == req.name and lv.rec.owner == owner
                and lv.rec.app_id == req.app_id for lv in self._live.values()):
            raise E.ConflictError(f"a running sandbox is already named {req.name!r}: pick "
                                  "another name or terminate it first")
        pooled = None
        if (self._pool and req.block_network and not mounts and not binds
                and req.gpu is None):  # pooled ones have no network, volumes or GPU
            # no await before _live holds it (collector); a miss still counts as demand
            pooled = self._pool.take(image, Profile(image.image_id, memory, cpu, disk))
        cid = pooled or new_id("sandbox")
        gpus = self.gpus.take(cid, owner, req.gpu)  # before any await: no double booking
        rec = SandboxRecord(
            sandbox_id=cid, name=req.name, image=req.image, image_id=image.image_id,
            app_id=req.app_id, tags=dict(req.tags), created_at=time.time(),
            timeout_s=req.timeout_s, idle_timeout_s=req.idle_timeout_s, cpu=cpu,
            memory_mib=memory, has_command=bool(req.command),
            workdir=req.workdir or image.config.get("workdir"), owner=owner, disk_mib=disk,
            layer=image.layer, rootfs=image.rootfs, image_config=image.config, uid=uid, gid=gid,
            encrypted_ports=list(req.encrypted_ports),
            unencrypted_ports=list(req.unencrypted_ports),
            gpus=[f"{d.name} {d.uuid}" for d in gpus])
        live = self._register(rec)
        stage = ""
        await self.store.put_sandbox(rec)
        try:
            spec = self._container_spec(cid, image, env, memory, cpu,
                                        egress=not req.block_network,
                                        allowlist=req.cidr_allowlist, disk_mib=disk,
                                        domains=req.domain_allowlist, mounts=mounts,
                                        volumes=binds, gpus=tuple(gpus))
            if pooled:
                try:
                    await self.runtime.set_env(cid, env)
                except (AgentError, AgentUnavailable) as e:  # died in the pool: boot cold
                    log.warning("warm pool: sandbox %s unusable (%s); booting cold", cid, e)
                    await self.runtime.destroy(cid)
                    await self.runtime.create(spec)
            else:
                await self.runtime.create(spec)
            stage = "could not create the workdir: "
            if req.workdir:
                await self.runtime.mkdir(cid, req.workdir, parents=True)
            stage = "could not start the sandbox's command: "
            if req.command:
                await self.runtime.start_main(cid, ExecSpec(  # stdin open, as Modal's
                    argv=list(req.command), cwd=rec.workdir, uid=rec.uid, gid=rec.gid,
                    keep_stdin=True))
        except BaseException as e:
            self._unregister(live)
            await self.runtime.destroy(cid)
            self.gpus.give_back(cid)
            rec.finish("failed", None, f"boot failed: {e}")
            await self.store.put_sandbox(rec)
            if isinstance(e, AgentError):
                raise E.InvalidRequestError(f"{stage}{e.message}") from None
            if isinstance(e, Exception):
                raise E.RuntimeUnavailableError(
                    f"the sandbox failed to boot: {e}. Run `sbx doctor` to check the host") from None
            raise
        rec.state, rec.started_at = "running", time.time()
        live.touch()
        await self.store.put_sandbox(rec)
        if req.command:
            live.main_task = asyncio.create_task(self._watch_main(live))
        return rec

    async def _resolve_image(self, ref: str):
        return await self.images.resolve(ref)

    @staticmethod
    async def _image_user(image: Any) -> tuple[int | None, int | None, str | None]:
        """The image's USER as (uid, gid, home directory), or Nones for root."""
        user = image.config.get("user")
        if not user:
            return None, None, None
        try:
            uid, gid = await asyncio.to_thread(resolve_user, image.rootfs, user)
        except ImageBuildError as e:
            raise E.InvalidRequestError(f"the image's user cannot be used: {e}") from None
        return uid, gid, await asyncio.to_thread(user_home, image.rootfs, uid)

    async def get(self, sandbox_id: str) -> SandboxRecord:
        live = self._live.get(sandbox_id)
        if live is not None:
            return live.rec
        rec = await self.store.get_sandbox(sandbox_id) if is_id("sandbox", sandbox_id) else None
        if rec is None:
            raise E.NotFoundError(f"no sandbox {sandbox_id!r}")
        return rec

    async def list(self, *, tags: dict[str, str] | None = None, app_id: str | None = None,
                   include_finished: bool = False, limit: int = 1000,
                   name: str | None = None) -> list[SandboxRecord]:
        if include_finished:
            recs = await self.store.list_sandboxes(limit=limit)
        else:
            recs = sorted((lv.rec for lv in self._live.values()), key=lambda r: -r.created_at)
        return [r for r in recs
                if (app_id is None or r.app_id == app_id)
                and (name is None or r.name == name)
                and all(r.tags.get(k) == v for k, v in (tags or {}).items())][:limit]

    async def set_tags(self, sandbox_id: str, tags: dict[str, str]) -> SandboxRecord:
        """Replace a running sandbox's tags (Sandbox.list filters on them)."""
        rec = await self.get(sandbox_id)
        live = self._live.get(sandbox_id)
        if live is None:
            raise E.SandboxTerminatedError(
                f"sandbox {sandbox_id} is {rec.state}: tags change only while it runs")
        live.rec.tags = dict(tags)
        await self.store.put_sandbox(live.rec)
        return live.rec

    async def terminate(self, sandbox_id: str) -> SandboxRecord:
        rec = await self.get(sandbox_id)
        live = self._live.get(sandbox_id)
        if live is not None:
            await self._finish(live, "terminated", exit_codes.KILLED, "terminated by request")
        return rec

    async def wait(self, sandbox_id: str, timeout_s: float) -> SandboxRecord:
        rec = await self.get(sandbox_id)
        live = self._live.get(sandbox_id)
        if live is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.done.wait(), timeout_s)
        return rec

    async def _finish(self, live: _Live, state: str, exit_code: int | None, reason: str) -> None:
        async with live.lock:
            rec = live.rec
            if rec.state not in LIVE_STATES:
                return
            cid = rec.sandbox_id
            status = await self.runtime.destroy(cid)
            if status.oom_killed and state in ("failed", "exited", "terminated"):
                state, exit_code, reason = "oom", exit_codes.KILLED, rec.oom_reason()
            rec.finish(state, exit_code, reason)
            self.gpus.give_back(cid)
            await self.store.put_sandbox(rec)
            self._unregister(live)
            live.done.set()
            for task in (live.main_task, live.probe_task):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            log.info("sandbox %s finished: %s (%s)", cid, state, reason)

    # ---- main command ------------------------------------------------------------------
    def log_path(self, sandbox_id: str, stream: str) -> str:
        return os.path.join(self.logs_dir, f"{sandbox_id}.{stream}")

    async def _watch_main(self, live: _Live) -> None:
        """Copy the main command's output to log files; finish the sandbox when it exits."""
        cid = live.rec.sandbox_id
        paths = {s: self.log_path(cid, s) for s in ("stdout", "stderr")}
        files = {s: os.fdopen(os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                      0o600), "ab") for s, p in paths.items()}
        try:
            offsets = {s: f.tell() for s, f in files.items()}
            while True:
                try:
                    stream = await self.runtime.attach_main(cid, offsets)
                    async for ev in stream.events():
                        if isinstance(ev, ExitFrame):
                            await stream.close()
                            await self._finish(live, "exited", ev.exit_code,
                                               f"its command exited with code {ev.exit_code}")
                            return
                        name, data = ev
                        offsets[name] += len(data)
                        if files[name].tell() < MAIN_LOG_CAP:
                            files[name].write(data)
                            files[name].flush()
                except (AgentUnavailable, OSError):
                    return  # the sandbox is gone; the monitor records why
        finally:
            for f in files.values():
                f.close()

    def is_live(self, sandbox_id: str) -> bool:
        return sandbox_id in self._live

