"""FOR TESTS ONLY: an in-process `Runtime` and base-image store, so the real server and
SDK can be tested in seconds without root, runsc or debootstrap.

NOT a sandbox. `FakeRuntime` runs commands as ordinary host subprocesses of the test
process (only trusted commands: echo, cat, sh, python3, sleep), with the working directory
inside the container's private directory; nothing is isolated. What it emulates, with
the real agent's semantics (runtimes/agent/sbxagent/):
- each container's file system is a private temp directory (a copy of the image rootfs):
  file operations map absolute in-container paths under it, refuse paths that are not
  absolute or resolve outside it, and fail with the agent's error codes (not_found,
  is_a_directory, not_a_directory, not_empty, already_exists, ...: the agent's own table);
- exec: stdout/stderr chunks in arrival order, then one ExitFrame; stdin, EOF, signals to
  the process group, `timeout_s` (124, timed_out), 127 for a missing program, 126 for a
  missing workdir, 128+N for death by signal N; a relative path in argv resolves against
  the in-container cwd (default "/"), an absolute one is a HOST path. $SBX_FAKE_ROOT is the
  container's root directory on the host, for commands that need an absolute path;
- the main command (start_main/attach_main from byte offsets), which survives an app
  restart as long as the same FakeRuntime is reused;
- lifecycle hooks: `kill(cid, oom=...)` (the container dies: status not running, its
  commands are cut off with AgentUnavailable, destroy reports oom_killed),
  `oom_kill_one(cid)` (an OOM kill inside a container that keeps running),
  `wedge(cid, why)` (its agent is unresponsive), `fail_next_create`.
Not emulated: isolation, limits (memory, cpu, disk, nproc), users (uid/gid), network
egress, pty (a pty request runs with pipes), interpreter contexts, snapshots
(export_changes), and ports unless mapped to a host port in `port_map`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from images import BuiltImage
from runtimes import (
    AgentError,
    AgentUnavailable,
    AgentUnresponsive,
    ContainerSpec,
    ContainerStatus,
    ExecSpec,
    ExecStream,
    ExitFrame,
    FileStat,
    Runtime,
)
from runtimes.agent.sbxagent.files import _errno_code  # the agent's errno -> code table

DRAIN_GRACE_S = 0.5


def _code_of(returncode: int) -> tuple[int, int | None]:
    """(exit code, signal) of a subprocess return code, as the agent reports it."""
    return (128 - returncode, -returncode) if returncode < 0 else (returncode, None)


def _read_at(path: str, offset: int, *, missing_ok: bool = True) -> bytes:
    """Up to 1 MiB of `path` from `offset` (b"" for a missing file when missing_ok)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20)
    except FileNotFoundError:
        if missing_ok:
            return b""
        raise


def _killpg(pid: int | None, sig: int = signal.SIGKILL) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


@dataclasses.dataclass
class _Container:
    spec: ContainerSpec
    base: str  # host directory: root/ (its file system) and main.stdout/main.stderr
    env: dict[str, str]
    dead: bool = False
    oom: bool = False
    unresponsive: str | None = None
    pgids: set[int] = dataclasses.field(default_factory=set)
    main: subprocess.Popen | None = None
    main_exit: ExitFrame | None = None

    @property
    def root(self) -> str:
        return os.path.join(self.base, "root")

    def kill_all(self) -> None:
        for pid in list(self.pgids) + ([self.main.pid] if self.main else []):
            _killpg(pid)


class _Stream(ExecStream):
    """A fixed list of events (a command that could not start) or a file tail (main)."""

    def __init__(self, source: AsyncIterator):
        self._source = source
        self.pid = 0

    def events(self):
        return self._source

    async def write_stdin(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...
    async def send_signal(self, signum: int) -> None: ...
    async def resize(self, rows: int, cols: int) -> None: ...

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._source.aclose()


class _Exec(ExecStream):
    def __init__(self, box: _Container, proc: asyncio.subprocess.Process, timeout_s):
        self.pid = proc.pid
        self._box, self._proc = box, proc
        self._queue: asyncio.Queue = asyncio.Queue()
        self._timed_out = False
        self._pumps = [asyncio.create_task(self._pump(proc.stdout, "stdout")),
                       asyncio.create_task(self._pump(proc.stderr, "stderr"))]
        self._waiter = asyncio.create_task(self._wait())
        self._timer = (asyncio.get_running_loop().call_later(timeout_s, self._timeout)
                       if timeout_s else None)

    def _timeout(self) -> None:
        self._timed_out = True
        _killpg(self.pid)

    async def _pump(self, pipe: asyncio.StreamReader, name: str) -> None:
        while chunk := await pipe.read(65536):
            await self._queue.put((name, chunk))

    async def _wait(self) -> None:
        rc = await self._proc.wait()
        _, pending = await asyncio.wait(self._pumps, timeout=DRAIN_GRACE_S)  # daemons' pipes
        for t in pending:
            t.cancel()
        self._box.pgids.discard(self.pid)
        if self._box.dead:  # the container went away under the command
            await self._queue.put(AgentUnavailable("the sandbox stopped (its agent is gone)"))
            return
        code, sig = _code_of(rc)
        await self._queue.put(ExitFrame(124 if self._timed_out else code, self._timed_out, sig))

    async def events(self):
        while True:
            ev = await self._queue.get()
            if isinstance(ev, Exception):
                raise ev
            yield ev
            if isinstance(ev, ExitFrame):
                return

    async def write_stdin(self, data: bytes) -> None:
        with contextlib.suppress(OSError, RuntimeError, AttributeError):
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()

    async def close_stdin(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, AttributeError):
            self._proc.stdin.close()

    async def send_signal(self, signum: int) -> None:
        _killpg(self.pid, signum)

    async def resize(self, rows: int, cols: int) -> None:
        return None

    async def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._proc.returncode is None:
            _killpg(self.pid)
        with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
            await asyncio.wait_for(self._proc.wait(), 5)
        for t in (*self._pumps, self._waiter):
            t.cancel()
        self._box.pgids.discard(self.pid)


class FakeRuntime(Runtime):
    """See the module docstring. Thread-safe enough for the hooks (`kill`, `wedge`) to be
    called from the test's thread while the server's loop runs in another."""

    name = "fake"

    def __init__(self, state_dir: str | None = None, *,
                 disk_quota_unavailable: str | None = "the fake runtime has no disk quotas"):
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="sbx-fake-rt-")
        self.disk_quota_unavailable = disk_quota_unavailable
        self.gpu_unavailable: str | None = None  # it "runs" GPU containers: spec.gpus recorded
        self.containers: dict[str, _Container] = {}
        self.port_map: dict[tuple[str, int], int] = {}  # (cid, port) -> host port
        self.fail_next_create: str | None = None
        self.created: list[ContainerSpec] = []  # every spec booted, for assertions
        self.closed = False

    # ---- test hooks -------------------------------------------------------------------
    def kill(self, cid: str, *, oom: bool = False) -> None:
        """The container dies on its own (oom=True: killed for memory)."""
        box = self.containers[cid]
        box.dead, box.oom = True, oom
        box.kill_all()

    def oom_kill_one(self, cid: str) -> None:
        """The kernel's OOM killer takes one process and the container runs on (what
        systrap does when a process's stub is chosen): status says running and oom_killed."""
        self.containers[cid].oom = True

    def wedge(self, cid: str, why: str = "its agent stopped answering (fake)") -> None:
        self.containers[cid].unresponsive = why

    def destroy_all(self) -> None:
        """Test teardown: kill every process and remove every container."""
        for cid in list(self.containers):
            box = self.containers.pop(cid)
            box.dead = True
            box.kill_all()
            shutil.rmtree(box.base, ignore_errors=True)

    # ---- lifecycle --------------------------------------------------------------------
    def _box(self, cid: str) -> _Container:
        box = self.containers.get(cid)
        if box is None or box.dead:
            raise AgentUnavailable(f"no agent answers in container {cid}")
        if box.unresponsive:
            raise AgentUnresponsive(box.unresponsive)
        return box

    async def create(self, spec: ContainerSpec) -> None:
        if self.fail_next_create:
            why, self.fail_next_create = self.fail_next_create, None
            raise RuntimeError(why)
        if spec.container_id in self.containers:
            raise RuntimeError(f"container {spec.container_id} already exists")
        base = os.path.join(self.state_dir, spec.container_id)
        os.makedirs(base, mode=0o700)
        await asyncio.to_thread(shutil.copytree, spec.rootfs, os.path.join(base, "root"),
                                symlinks=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               **spec.env, "SBX_FAKE_ROOT": os.path.join(base, "root")}
        self.containers[spec.container_id] = _Container(spec, base, env)
        self.created.append(spec)

    async def set_env(self, cid: str, env: dict[str, str]) -> None:
        self._box(cid).env.update(env)

    async def status(self, cid: str) -> ContainerStatus:
        box = self.containers.get(cid)
        return ContainerStatus(running=box is not None and not box.dead,
                               oom_killed=bool(box and box.oom))

    async def destroy(self, cid: str) -> ContainerStatus:
        box = self.containers.pop(cid, None)
        if box is None:
            return ContainerStatus(running=False)
        box.dead = True
        box.kill_all()
        await asyncio.to_thread(shutil.rmtree, box.base, True)
        return ContainerStatus(running=False, oom_killed=box.oom)

    async def reattach(self, cid: str) -> bool:
        box = self.containers.get(cid)
        return box is not None and not box.dead and not box.unresponsive

    async def collect(self, known: set[str]) -> list[str]:
        stray = sorted(set(self.containers) - known)
        for cid in stray:
            await self.destroy(cid)
        return stray

    async def probe(self, cid: str) -> None:
        self._box(cid)

    def unresponsive(self, cid: str) -> str | None:
        box = self.containers.get(cid)
        return box.unresponsive if box else None

    async def close(self) -> None:
        self.closed = True  # like gVisor's: sandboxes keep running for the next server

    # ---- commands ---------------------------------------------------------------------
    def _cwd_env(self, box: _Container, spec: ExecSpec) -> tuple[str, dict[str, str]]:
        return self._host(box, spec.cwd or "/", follow=True), {**box.env, **(spec.env or {})}

    async def exec(self, cid: str, spec: ExecSpec) -> ExecStream:
        box = self._box(cid)
        cwd, env = self._cwd_env(box, spec)
        try:
            if not os.path.isdir(cwd):
                raise FileNotFoundError(2, "workdir does not exist", spec.cwd)
            proc = await asyncio.create_subprocess_exec(
                *spec.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
        except (OSError, ValueError) as e:  # like the agent (and a shell): 127 or 126
            missing = isinstance(e, FileNotFoundError) and e.filename in (spec.argv[0], None)
            why = f"sbx: {e.filename or spec.argv[0]}: {getattr(e, 'strerror', None) or e}\n"

            async def failed():
                yield ("stderr", why.encode())
                yield ExitFrame(127 if missing else 126)
            return _Stream(failed())
        box.pgids.add(proc.pid)
        return _Exec(box, proc, spec.timeout_s)

    async def start_main(self, cid: str, spec: ExecSpec) -> None:
        box = self._box(cid)
        if box.main is not None:
            raise AgentError("conflict", "main command already started")
        self._spawn_main(box, spec)

        def reap(proc=box.main):
            code, sig = _code_of(proc.wait())
            box.main_exit = ExitFrame(code, signal=sig)
        threading.Thread(target=reap, daemon=True).start()

    def _spawn_main(self, box: _Container, spec: ExecSpec) -> None:
        """Output goes straight to files (no pump on the server's loop), so the command
        outlives an app restart like the agent's main command does."""
        cwd, env = self._cwd_env(box, spec)
        with open(os.path.join(box.base, "main.stdout"), "wb") as out, \
                open(os.path.join(box.base, "main.stderr"), "wb") as err:
            try:
                box.main = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=err, cwd=cwd, env=env,
                                            start_new_session=True)
            except OSError as e:
                raise AgentError("exec_failed", f"{spec.argv[0]}: {e.strerror or e}") from None

    async def attach_main(self, cid: str, offsets: dict[str, int]) -> ExecStream:
        box = self._box(cid)
        if box.main is None:
            raise AgentError("not_found", "this sandbox has no main command")
        pos = {s: int(offsets.get(s, 0)) for s in ("stdout", "stderr")}

        async def tail():
            while True:
                done = box.main_exit  # read before the files: nothing is written after it
                if box.dead:
                    raise AgentUnavailable("the sandbox stopped (its agent is gone)")
                got = False
                for s, at in pos.items():
                    if data := _read_at(os.path.join(box.base, f"main.{s}"), at):
                        pos[s] += len(data)
                        got = True
                        yield (s, data)
                if done is not None and not got:
                    yield done
                    return
                if not got:
                    await asyncio.sleep(0.02)
        return _Stream(tail())

    async def open_port(self, cid: str, port: int):
        self._box(cid)
        host_port = self.port_map.get((cid, port))
        if host_port is None:
            raise AgentError("port_refused", f"nothing listens on port {port} in the sandbox")
        return await asyncio.open_connection("127.0.0.1", host_port)

    # ---- files (the agent's semantics: runtimes/agent/sbxagent/files.py) ---------------
    def _host(self, box: _Container, path: str, *, follow: bool = False) -> str:
        """The host path of an absolute in-container path; refuses one that is relative or
        whose resolution (of its parent, or with `follow` of itself) leaves the container
        (`..` cannot: it is resolved lexically first, as from the container's /)."""
        if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
            raise AgentError("invalid_path", "path must be absolute")
        host = os.path.join(box.root, os.path.normpath(path).lstrip("/"))
        root = os.path.realpath(box.root)
        real = os.path.realpath(host if follow else os.path.dirname(host))
        if os.path.commonpath([real, root]) != root:
            raise AgentError("permission_denied", f"{path} leads outside the sandbox (fake)")
        return host

    def _entry(self, box: _Container, host: str, path: str, name: str | None = None) -> FileStat:
        import stat as S
        st = os.lstat(host)
        kind = ("directory" if S.S_ISDIR(st.st_mode) else "symlink" if S.S_ISLNK(st.st_mode)
                else "file" if S.S_ISREG(st.st_mode) else "other")
        return FileStat(name=name if name is not None else os.path.basename(path) or path,
                        path=path, type=kind, size=st.st_size, mode=S.S_IMODE(st.st_mode),
                        mtime=st.st_mtime)

    @contextlib.contextmanager
    def _errors(self):
        try:
            yield
        except OSError as e:
            raise AgentError(_errno_code(e), f"{e.strerror or e}") from None

    async def read_file(self, cid: str, path: str):
        box = self._box(cid)
        host = self._host(box, path, follow=True)
        with self._errors():
            if os.path.isdir(host):
                raise IsADirectoryError(21, "Is a directory", path)
            if os.path.exists(host) and not os.path.isfile(host):
                raise AgentError("not_regular", "it is a device, FIFO or socket")
        at = 0
        while True:
            with self._errors():
                chunk = _read_at(host, at, missing_ok=False)
            if not chunk:
                return
            at += len(chunk)
            yield chunk

    async def write_file(self, cid, path, chunks, *, mode=None, parents=True) -> int:
        box = self._box(cid)
        host = self._host(box, path)
        tmp = f"{host}.sbx-fake-{time.monotonic_ns()}.tmp"
        total = 0
        with self._errors():
            if parents:
                os.makedirs(os.path.dirname(host), exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                with os.fdopen(fd, "wb") as f:
                    async for chunk in chunks:
                        f.write(chunk)
                        total += len(chunk)
                    if mode is not None:
                        os.fchmod(f.fileno(), int(mode))
                os.replace(tmp, host)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return total

    async def list_dir(self, cid: str, path: str) -> list[FileStat]:
        box = self._box(cid)
        host = self._host(box, path, follow=True)
        with self._errors():
            if not os.path.isdir(host):
                os.stat(host)  # not_found when missing
                return [self._entry(box, host, path)]
            return [self._entry(box, os.path.join(host, n), os.path.join(path, n), n)
                    for n in sorted(os.listdir(host))]

    async def stat(self, cid: str, path: str) -> FileStat:
        box = self._box(cid)
        with self._errors():
            return self._entry(box, self._host(box, path), path)

    async def mkdir(self, cid: str, path: str, *, parents: bool = True) -> None:
        box = self._box(cid)
        host = self._host(box, path)
        with self._errors():
            os.makedirs(host, exist_ok=True) if parents else os.mkdir(host)

    async def remove(self, cid: str, path: str, *, recursive: bool = False) -> None:
        box = self._box(cid)
        host = self._host(box, path)
        with self._errors():
            if os.path.isdir(host) and not os.path.islink(host):
                shutil.rmtree(host) if recursive else os.rmdir(host)
            else:
                os.unlink(host)


class FakeImageStore:
    """The base image without debootstrap: a tiny rootfs (/tmp, /etc/hostname, /root)
    under `images_dir`, returned as a real `images.BuiltImage`. What the server touches:
    `images_dir` (the layer store lives under it), `ensure_base`, `get`, `list`."""

    def __init__(self, images_dir: str | None = None):
        self.images_dir = os.path.abspath(images_dir or tempfile.mkdtemp(prefix="sbx-fake-im-"))
        digest = "sha256:" + hashlib.sha256(b"fake debian_slim").hexdigest()
        image_id = "im-" + digest[7:27]
        rootfs = os.path.join(self.images_dir, image_id, "rootfs")
        for d in ("tmp", "root", "etc", "home"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        with open(os.path.join(rootfs, "etc", "hostname"), "w") as f:
            f.write("sandbox\n")
        self.base = BuiltImage(image_id=image_id, digest=digest, rootfs=rootfs,
                               python="/usr/bin/python3", size_bytes=0)
        self.ensure_calls = 0

    async def ensure_base(self, progress: Any = None, *, suite: str | None = None) -> BuiltImage:
        self.ensure_calls += 1
        return self.base

    def get(self, image_id: str) -> BuiltImage | None:
        return self.base if image_id == self.base.image_id else None

    def list(self) -> list[BuiltImage]:
        return [self.base]
