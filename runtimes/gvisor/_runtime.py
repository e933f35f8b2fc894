"""gVisor backend: boots sandboxes with runsc and talks to their agents (runtimes layer).

Must not import the server. Layout under `state_dir` (SBX_HOME/runtime):
  runsc/                     runsc --root (state files)
  sandboxes/<id>/bundle/     config.json
  sandboxes/<id>/run/        a 64 KiB tmpfs bind-mounted rw at /.sbx/run: the agent socket
                             (see _rundir.py)
  sandboxes/<id>/disk*, rootfs/  with a disk quota: see _disk.py
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import AsyncIterator

from .._agent_client import AgentClient, AgentError, AgentUnavailable, AgentUnresponsive
from .._base import (
    ContainerSpec,
    ContainerStatus,
    ExecSpec,
    ExecStream,
    FileStat,
    Runtime,
)
from .._errors import RuntimeFault
from . import _cgroups, _disk, _gpu_spec, _procs, _rundir
from ._bundle_files import (
    AGENT_DIR,
    PYTHON_CANDIDATES,
    hosts_file,
    install_agent,
    private_file,
)
from ._compat import build_statx_shim, is_glibc
from ._fallback import RunscExec
from ._netns import EgressNetworks, NetworkSetupError
from ._runsc import Features, Profile, Runsc, RunscError, detect_features, find_runsc
from ._spec import AGENT_MOUNT, RUN_MOUNT, build_spec

log = logging.getLogger("sbx.runtime.gvisor")

BOOT_TIMEOUT_S = 20.0
# an agent silent this long gets SIGCONT from the host; then this long again to answer, or
# it is declared unresponsive (a busy host can delay an answer: be generous before ending it)
PING_TIMEOUT_S = 5.0
REVIVED_PING_TIMEOUT_S = 15.0


NVPROXY = "--nvproxy=true"


class RuntimeUnavailable(RuntimeFault):
    """runsc is missing or unusable; the message says how to fix it."""


class BootError(RuntimeFault):
    """The sandbox did not come up."""


class GVisorRuntime(Runtime):
    name = "gvisor"

    def __init__(self, state_dir: str, *, runsc_binary: str | None = None,
                 platform: str = "auto", extra_flags: list[str] | None = None,
                 dns_upstream: str | None = None):
        self.state_dir = os.path.abspath(state_dir)
        self.binary = runsc_binary or find_runsc()
        if not self.binary:
            raise RuntimeUnavailable(
                "runsc (gVisor) is not installed: run `apt-get install runsc` (Debian/Ubuntu) "
                "or install a release from gvisor.dev, then start again")
        self.platform = platform
        self.extra_flags = list(extra_flags or [])
        self.cgroup_parent = "sbx-" + hashlib.sha256(self.state_dir.encode()).hexdigest()[:10]
        self.features: Features | None = None
        self.devices_locked = False
        self.runsc: Runsc | None = None
        self.agent_dir = AGENT_DIR
        self.statx_shim: str | None = None
        self._agent_known: dict[str, bool] = {}
        self._profiles: dict[str, Profile] = {}
        self._owned: set[int] = set()  # sandbox and gofer pids that are our children
        self._checks: dict[str, asyncio.Future] = {}  # liveness checks in flight
        self._unresponsive: dict[str, str] = {}  # container id -> why its agent is dead
        self.net = EgressNetworks(self.cgroup_parent[4:], self.state_dir,
                                  dns_upstream=dns_upstream)
        self._python: dict[str, str | None] = {}

    async def start(self) -> None:
        """Detect features and prepare host state; call once before use."""
        self.features = await detect_features(self.binary)
        if not self.features.host_uds_create:
            raise RuntimeUnavailable(
                f"{self.features.version or 'this runsc'} lacks --host-uds; install a runsc "
                "from 2022 or later")
        self.platform = self.features.platform(self.platform)
        log.info("runsc %s, platform %s", self.features.version, self.platform)
        flags = [f"--platform={self.platform}", "--host-uds=create", *self.extra_flags]
        self.runsc = Runsc(self.binary, os.path.join(self.state_dir, "runsc"), flags,
                           profile_of=self._profile)
        self.agent_dir = install_agent(os.path.join(self.state_dir, "agent"))
        if self.features.statx_bug:
            self.statx_shim = await asyncio.to_thread(build_statx_shim, self.agent_dir)
        os.makedirs(os.path.join(self.state_dir, "sandboxes"), mode=0o700, exist_ok=True)
        self.devices_locked = _cgroups.ensure_parent(self.cgroup_parent)
        self.gpu_unavailable = await _gpu_spec.gpu_unavailable(self.features.nvproxy,
                                                               self.binary)
        self.disk_quota_unavailable = _disk.unavailable()
        if self.disk_quota_unavailable:
            log.warning("disk quotas are off: %s", self.disk_quota_unavailable)
        if not _procs.become_subreaper():
            log.warning("could not become a child subreaper; sandbox teardown may be slow")

    # ---- paths -------------------------------------------------------------------------
    def _dir(self, cid: str) -> str:
        return os.path.join(self.state_dir, "sandboxes", cid)

    def _socket(self, cid: str) -> str:
        return os.path.join(self._dir(cid), "run", "agent.sock")

    def _cgroup(self, cid: str) -> str:
        prof = self._profile(cid)
        gpu = prof is not None and NVPROXY in prof.flags
        return f"/{self.cgroup_parent}{'-gpu' if gpu else ''}/{cid}"

    def _agent(self, cid: str) -> AgentClient:
        return AgentClient(self._socket(cid), watchdog=lambda: self.probe(cid))

    def _pids(self, cid: str) -> list[int]:
        """The container's gofer and sandbox pids from its state file, minus any that now
        belong to another process (a pid is reused once its process was reaped)."""
        assert self.runsc
        return [p for p in self.runsc.pids_of(cid)
                if p in self._owned or _procs.cmdline_has(p, cid)]

    def _python_in(self, rootfs: str) -> str | None:
        if rootfs not in self._python:
            self._python[rootfs] = next(
                (p for p in PYTHON_CANDIDATES if os.path.lexists(rootfs + p)), None)
        return self._python[rootfs]

    def _preload(self, rootfs: str) -> str | None:
        if self.statx_shim and is_glibc(rootfs):
            return f"{AGENT_MOUNT}/{self.statx_shim}"
        return None

    def _meta(self, cid: str) -> dict | None:
        try:
            with open(os.path.join(self._dir(cid), "meta.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _has_agent(self, cid: str) -> bool:
        """Whether PID 1 is the agent (read once from meta.json, which survives restarts)."""
        known = self._agent_known.get(cid)
        if known is None:
            meta = self._meta(cid)
            if meta is None:
                return os.path.exists(self._socket(cid))
            known = self._agent_known[cid] = bool(meta.get("agent"))
        return known

    def _profile(self, cid: str) -> Profile | None:
        """The runsc flags and netns a container was booted with (from meta.json)."""
        prof = self._profiles.get(cid)
        if prof is None:
            meta = self._meta(cid) or {}
            if "flags" not in meta:
                return None
            prof = self._profiles[cid] = Profile(tuple(meta["flags"]), meta.get("netns"))
        return prof

    # ---- lifecycle ---------------------------------------------------------------------
    async def create(self, spec: ContainerSpec) -> None:
        assert self.runsc, "call start() first"
        cid = spec.container_id
        if spec.gpus and self.gpu_unavailable:  # before anything is made
            raise RuntimeUnavailable(f"no GPU containers here: {self.gpu_unavailable}")
        base = self._dir(cid)
        os.makedirs(os.path.join(base, "bundle"), mode=0o700)
        os.makedirs(os.path.join(base, "run"), mode=0o700)
        python = self._python_in(spec.rootfs)
        if spec.writable_rootfs:  # a build's one-off mount: do not remember it
            self._python.pop(spec.rootfs, None)
        disk = bool(spec.disk_mib) and not spec.writable_rootfs
        prof = Profile(("--network=sandbox" if spec.egress else "--network=none",
                        "--overlay2=none" if spec.writable_rootfs or disk
                        else "--overlay2=root:memory", *((NVPROXY,) if spec.gpus else ())),
                       self.net.ns_path(cid) if spec.egress else None)
        with private_file(os.path.join(base, "meta.json")) as f:
            json.dump({"agent": bool(python), "created": time.time(),
                       "flags": list(prof.flags), "netns": prof.netns,
                       "disk_mib": spec.disk_mib if disk else None}, f)
        self._agent_known[cid] = bool(python)
        self._profiles[cid] = prof
        try:
            _rundir.mount(os.path.join(base, "run"))
            rootfs, tmp_dir = spec.rootfs, None
            if disk:
                rootfs, tmp_dir = await _disk.create(base, spec.rootfs, spec.disk_mib)
            if spec.egress:
                await self.net.create(cid, allow=spec.egress_allowlist,
                                      domains=spec.egress_domains)
                spec = dataclasses.replace(
                    spec, mounts=((self.net.resolv_conf(
                        pinned=spec.egress_allowlist is not None or bool(spec.egress_domains)),
                                     "/etc/resolv.conf"), *spec.mounts))
            if not spec.writable_rootfs:  # not in image builds: it would land in the layer
                spec = dataclasses.replace(spec, volumes=(
                    (hosts_file(base), "/etc/hosts", False), *spec.volumes))
            config = build_spec(spec, rootfs=rootfs, agent_dir=self.agent_dir,
                                run_dir=os.path.join(base, "run"),
                                cgroups_path=self._cgroup(cid), python=python,
                                preload=self._preload(spec.rootfs), netns=prof.netns,
                                tmp_dir=tmp_dir)
            if spec.gpus:
                _cgroups.ensure_parent(self.cgroup_parent + "-gpu", _gpu_spec.parent_allow())
                _gpu_spec.add_gpus(config, list(spec.gpus))
            with private_file(os.path.join(base, "bundle", "config.json")) as f:
                json.dump(config, f)
            await self.runsc.call("run", "--detach", "--bundle", os.path.join(base, "bundle"),
                                  cid, cid=cid, boot=True, timeout=BOOT_TIMEOUT_S,
                                  log_path=os.path.join(base, "runsc.log"))
            self._owned.update(self.runsc.pids_of(cid))  # `run` left them to us: we reap
            if python:
                await self._wait_agent(cid)
        except BaseException as e:
            await self.destroy(cid)
            if isinstance(e, (RunscError, AgentUnavailable, asyncio.TimeoutError, OSError,
                              NetworkSetupError, _disk.DiskSetupError)):
                raise BootError(f"sandbox {cid} failed to boot: {e}") from e
            raise

    async def _wait_agent(self, cid: str) -> None:
        agent = AgentClient(self._socket(cid))
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            try:
                await agent.ping(max(0.1, deadline - time.monotonic()))
                return
            except (AgentUnavailable, OSError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise AgentUnavailable("the in-sandbox agent did not answer within "
                                           f"{BOOT_TIMEOUT_S:.0f}s")
                if not any(_procs.alive(p) for p in self._pids(cid)):
                    raise AgentUnavailable("the sandbox exited during boot")
                await asyncio.sleep(0.003)  # connect attempts are cheap; ready matters

    async def status(self, cid: str) -> ContainerStatus:
        assert self.runsc
        st = self.runsc.read_state(cid) or {}
        sandbox_pid = (st.get("sandbox") or {}).get("pid")
        running = sandbox_pid in self._pids(cid) and _procs.alive(sandbox_pid)
        return ContainerStatus(running=running,
                               oom_killed=_cgroups.oom_killed(self._cgroup(cid)))

    # ---- agent liveness ------------------------------------------------------------------
    async def probe(self, cid: str) -> None:
        """Check that the container's agent answers; one check per container at a time,
        shared by every caller. Raises AgentUnresponsive (recorded: see `unresponsive`)
        when it does not even after SIGCONT, AgentUnavailable when the container is gone."""
        if not self._has_agent(cid):
            return
        task = self._checks.get(cid)
        if task is None:
            task = self._checks[cid] = asyncio.ensure_future(self._check_agent(cid))
            task.add_done_callback(lambda t: (self._checks.pop(cid, None),
                                              t.cancelled() or t.exception()))
        await asyncio.shield(task)

    def unresponsive(self, cid: str) -> str | None:
        return self._unresponsive.get(cid)

    async def _check_agent(self, cid: str) -> None:
        """Ping; if the agent is silent, SIGCONT it from the host (code in the sandbox may
        have stopped PID 1: `kill -STOP 1`, or SIGTSTP) and ping again."""
        assert self.runsc
        agent = AgentClient(self._socket(cid))
        for attempt, timeout_s in ((1, PING_TIMEOUT_S), (2, REVIVED_PING_TIMEOUT_S)):
            try:
                await agent.ping(timeout_s)
                if attempt == 2:
                    log.warning("sandbox %s: its agent answers again after SIGCONT", cid)
                return
            except asyncio.TimeoutError:
                why = f"no answer to a ping within {timeout_s:g}s"
            except AgentUnavailable as e:
                if not (await self.status(cid)).running:
                    raise  # the container is gone: not a liveness question
                why = f"its socket is unusable ({e})"
            if attempt == 1:
                log.warning("sandbox %s: agent check failed (%s); sending it SIGCONT", cid, why)
                await self.runsc.call("kill", cid, "CONT", cid=cid, timeout=10, check=False)
        reason = (f"its in-sandbox agent (PID 1) stopped answering: {why}, even after "
                  "SIGCONT from the host (code in the sandbox stopped, wedged or replaced it)")
        log.error("sandbox %s: %s", cid, reason)
        self._unresponsive[cid] = reason
        raise AgentUnresponsive(reason)

    async def destroy(self, cid: str) -> ContainerStatus:
        """kill -> delete --force -> kill leftover pids -> cgroups -> state -> files."""
        assert self.runsc
        oom = _cgroups.oom_killed(self._cgroup(cid))
        pids = self._pids(cid)
        if cid in self.runsc.known_ids():
            await self.runsc.call("kill", cid, "KILL", cid=cid, timeout=10, check=False)
            # reap the sandbox and gofer so delete finds them gone (no 1-2 s zombie wait)
            await _procs.kill_and_reap(pids, self._owned)
            await self.runsc.call("delete", "--force", cid, cid=cid, timeout=15, check=False)
        await _procs.kill_and_reap(pids, self._owned)
        _cgroups.remove(self._cgroup(cid))
        self.runsc.remove_state(cid)
        self._reap()
        if self.net.has(cid):
            await self.net.destroy(cid)
        if await _disk.destroy(self._dir(cid)):  # never rmtree through a live mount
            shutil.rmtree(self._dir(cid), ignore_errors=True)
        self._agent_known.pop(cid, None)
        self._profiles.pop(cid, None)
        self._unresponsive.pop(cid, None)
        return ContainerStatus(running=False, oom_killed=oom)

    @contextlib.asynccontextmanager
    async def egress_namespace(self, name: str) -> AsyncIterator[str | None]:
        if not self.net.resolvers:  # names could not resolve in it: the host's network
            log.warning("no non-loopback DNS resolver: %s runs on the host's network", name)
            yield None
            return
        path = await self.net.create(name)
        try:
            yield path
        finally:
            await self.net.destroy(name)

    def _reap(self) -> None:
        self._owned = _procs.reap(self._owned)

    async def reattach(self, cid: str) -> bool:
        assert self.runsc
        if not (await self.status(cid)).running:
            return False
        try:  # DNS pinning (domain_allowlist) lives in this process: start it again
            await self.net.resume(cid)
        except (NetworkSetupError, OSError) as e:
            log.error("sandbox %s: its domain_allowlist resolver did not come back (its DNS "
                      "fails until it is recreated): %s", cid, e)
        if not self._has_agent(cid):
            return True
        try:
            await self.probe(cid)
            return True
        except (AgentUnavailable, AgentError, OSError):
            return False

    async def collect(self, known: set[str]) -> list[str]:
        """Reap containers, cgroups and directories of this runtime that `known` lacks."""
        assert self.runsc
        self._reap()
        seen = (self.runsc.known_ids() | _cgroups.children(self.cgroup_parent)
                | _cgroups.children(self.cgroup_parent + "-gpu") | self.net.known())
        try:
            seen |= set(os.listdir(os.path.join(self.state_dir, "sandboxes")))
        except OSError:
            pass
        stray = sorted(seen - known)
        for cid in stray:
            log.warning("collector: reaping unknown sandbox %s", cid)
            await self.destroy(cid)
        return stray

    # ---- exec and files ----------------------------------------------------------------
    async def exec(self, cid: str, spec: ExecSpec) -> ExecStream:
        assert self.runsc
        if self._has_agent(cid):
            return await self._agent(cid).exec(spec)
        return await RunscExec.start(self.runsc, cid, spec)

    async def set_env(self, cid: str, env: dict[str, str]) -> None:
        if env:
            await self._require_agent(cid, "a pre-booted sandbox").call({"op": "setenv", "env": env})

    async def start_main(self, cid: str, spec: ExecSpec) -> None:
        await self._require_agent(cid, "a main command").main_start(spec)

    async def write_main_stdin(self, cid: str, data: bytes, eof: bool) -> None:
        import base64

        await self._require_agent(cid, "stdin of a main command").call(
            {"op": "main_stdin", "data": base64.b64encode(data).decode(), "eof": eof})

    async def attach_main(self, cid: str, offsets: dict[str, int]) -> ExecStream:
        return await self._require_agent(cid, "a main command").main_attach(offsets)

    def _require_agent(self, cid: str, what: str = "file operations") -> AgentClient:
        if not self._has_agent(cid):
            raise AgentError("unsupported", f"{what} needs python3 in the image (the "
                             "in-sandbox agent runs on it); use exec, or an image with python3")
        return self._agent(cid)

    async def read_file(self, cid: str, path: str):
        async for chunk in self._require_agent(cid).read_file(path):
            yield chunk

    async def write_file(self, cid, path, chunks, *, mode=None, parents=True) -> int:
        return await self._require_agent(cid).write_file(path, chunks, mode=mode, parents=parents)

    async def list_dir(self, cid: str, path: str) -> list[FileStat]:
        res = await self._require_agent(cid).call({"op": "list", "path": path})
        return [FileStat.from_agent(e) for e in res["entries"]]

    async def stat(self, cid: str, path: str) -> FileStat:
        res = await self._require_agent(cid).call({"op": "stat", "path": path})
        return FileStat.from_agent(res["entry"])

    async def mkdir(self, cid: str, path: str, *, parents: bool = True) -> None:
        await self._require_agent(cid).call({"op": "mkdir", "path": path, "parents": parents})

    async def remove(self, cid: str, path: str, *, recursive: bool = False) -> None:
        await self._require_agent(cid).call({"op": "remove", "path": path,
                                             "recursive": recursive})

    async def open_port(self, cid: str, port: int):
        return await self._require_agent(cid, "inbound ports").port_connect(port)
    async def context_op(self, cid: str, req: dict) -> dict:
        return await self._require_agent(cid, "a code interpreter context").call(req)

    async def context_run(self, cid: str, req: dict):
        return await self._require_agent(cid, "a code interpreter context").context_run(req)

    async def export_changes(self, cid: str, base_rootfs: str, dest_dir: str):
        from .._export import export_changes

        agent = self._require_agent(cid, "a file-system snapshot")
        upper = os.path.join(self._dir(cid), "disk", "upper")  # with a disk (_disk.py)
        return await export_changes(agent, base_rootfs, dest_dir,
                                    upper=upper if os.path.isdir(upper) else None,
                                    exclude=self._bind_targets(cid))

    def _bind_targets(self, cid: str) -> list[str]:
        """Where the container has host files bound in (its /etc/hosts, a pinned
        resolv.conf, volumes): not part of its filesystem, so never in a snapshot (Docker's
        commit leaves /etc/hosts out the same way). /tmp on a disk is the rootfs's own."""
        try:
            with open(os.path.join(self._dir(cid), "bundle", "config.json")) as f:
                mounts = json.load(f).get("mounts", [])
        except (OSError, ValueError):
            return []
        return sorted({m["destination"] for m in mounts if m.get("type") == "bind"
                       and m.get("destination") not in ("/tmp", AGENT_MOUNT, RUN_MOUNT)})

    async def close(self) -> None:
        """Server shutdown: sandboxes keep running; only an empty cgroup parent goes."""
        self._reap()
        _cgroups.remove_parent(self.cgroup_parent)
        _cgroups.remove_parent(self.cgroup_parent + "-gpu")
        await self.net.close()

    def memory_bytes(self, cid: str) -> int | None:
        return _cgroups.memory_bytes(self._cgroup(cid))

    async def stats(self, cid: str) -> dict:
        assert self.runsc
        rc, out, _ = await self.runsc.call("events", "--stats", cid, cid=cid, timeout=10,
                                           check=False)
        if rc != 0:
            return {}
        try:
            data = json.loads(out).get("data", {})
        except ValueError:
            return {}
        return {"cpu_ns": data.get("cpu", {}).get("usage", {}).get("total"),
                "memory_bytes": data.get("memory", {}).get("usage", {}).get("usage"),
                "pids": data.get("pids", {}).get("current")}
