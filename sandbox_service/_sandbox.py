"""Sandbox: create, exec, wait, terminate, list (public layer, async implementation + sync
wrapper). Modal's names and signatures, so `import sandbox_service as modal` works.
Reaches the server only through `_client`.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ._app import _AsyncApp
from ._client import _Client, default_client, wire_model
from ._filesystem import _AsyncFilesystem, _AsyncSandboxFile
from ._image import Image
from ._interpreter import _InterpreterMixin
from ._process import _AsyncContainerProcess
from ._secret import Secret, check_required_keys, merge_env, split_secrets
from ._streams import _AsyncStreamReader, _AsyncStreamWriter
from ._sync import Wrapped, classmethod_both
from ._tunnel import Tunnel, _AsyncPortForward, tunnels_of
from .wire import ExecRequest, SandboxCreate, SandboxInfo
from .wire import errors as E

FINISHED_WAIT_S = 30.0


def _check_args(args: Sequence[Any], what: str) -> list[str]:
    bad = [a for a in args if not isinstance(a, str)]
    if bad:
        raise E.InvalidRequestError(
            f"{what} arguments must be strings, got {type(bad[0]).__name__} {bad[0]!r}: "
            "pass each argument as its own str, e.g. exec('python', '-c', 'print(1)')")
    return list(args)


class _AsyncSandbox(_InterpreterMixin):  # + create_context, run_code, ... (_interpreter.py)
    def __init__(self, client: _Client, info: SandboxInfo):
        self._client = client
        self._info = info
        self._stdout: _AsyncStreamReader | None = None
        self._stdin: _AsyncStreamWriter | None = None
        self._stderr: _AsyncStreamReader | None = None
        self.filesystem = _AsyncFilesystem(client, info.sandbox_id)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    async def create(cls, *args: str, app: Any = None, image: Image | None = None,
                     timeout: float = 300, idle_timeout: float | None = None,
                     workdir: str | None = None, env: dict[str, str | None] | None = None,
                     secrets: Sequence[Secret] | None = None, volumes: dict | None = None,
                     cpu: float | None = None, memory: int | None = None, gpu: Any = None,
                     ephemeral_disk: int | None = None,
                     block_network: bool = True, cidr_allowlist: Sequence[str] | None = None,
                     domain_allowlist: Sequence[str] | None = None,
                     tags: dict[str, str] | None = None, name: str | None = None,
                     encrypted_ports: Sequence[int] = (), unencrypted_ports: Sequence[int] = (),
                     client: _Client | None = None, **unsupported: Any) -> "_AsyncSandbox":
        """Boot a new gVisor sandbox. With `args`, they are its main command and the sandbox
        ends when that command exits; without, it runs until `terminate()` or `timeout`.
        `ephemeral_disk`: MiB of writable disk, separate from `memory` (a write past it
        fails with ENOSPC; default: the server's SBX_DEFAULT_DISK_MIB)."""
        for harmless in ("verbose", "region", "cloud"):  # placement/logging: one machine here
            unsupported.pop(harmless, None)
        if unsupported:
            raise E.InvalidRequestError(
                f"Sandbox.create() does not support {', '.join(sorted(unsupported))} yet")
        if gpu is not None and not isinstance(gpu, str):  # Modal's Sandbox takes one type
            raise E.InvalidRequestError(
                f"Sandbox.create(gpu={gpu!r}): give one GPU type such as 'H100', "
                "'A100-80GB:2' or 'any' (lists of fallbacks are for functions)")
        if isinstance(memory, tuple):
            memory = memory[1]  # Modal's (request, limit): the limit is what we enforce
        if isinstance(cpu, tuple):
            cpu = cpu[1]
        client = client or default_client()
        app_id = await _AsyncApp._resolve_id(app, client)
        inline_env, secret_names, secret_checks = split_secrets(env, secrets)
        await check_required_keys(client, secret_checks)
        body: dict[str, Any] = {
            "image": await (image or Image.debian_slim())._resolve(client),
            "command": _check_args(args, "Sandbox.create") or None,
            "timeout_s": timeout, "idle_timeout_s": idle_timeout, "workdir": workdir,
            "env": inline_env, "cpu": cpu, "memory_mib": memory,
            "tags": dict(tags or {}), "name": name, "app_id": app_id,
            "block_network": block_network,
            "cidr_allowlist": list(cidr_allowlist) if cidr_allowlist is not None else None,
        }
        if secret_names:
            body["secret_names"] = secret_names
        if encrypted_ports or unencrypted_ports:  # reachable only through the service's proxy
            body["encrypted_ports"] = list(encrypted_ports)
            body["unencrypted_ports"] = list(unencrypted_ports)
        if ephemeral_disk is not None:  # MiB of writable disk, separate from memory
            body["disk_mib"] = ephemeral_disk
        if volumes:
            from ._volume import mounts_of

            body["volumes"] = await mounts_of(volumes, "Sandbox.create")
        if gpu is not None:  # whole GPUs through gVisor's nvproxy (docs/gpu.md)
            body["gpu"] = gpu
        if domain_allowlist is not None:  # names resolved and reached only through DNS pinning
            body["domain_allowlist"] = list(domain_allowlist)
        req = wire_model(SandboxCreate, **body)
        data = await client.request("POST", "/v1/sandboxes", timeout=600,
                                    json_body=req.model_dump(mode="json", exclude_unset=True))
        return cls(client, SandboxInfo(**data))

    @classmethod
    async def from_id(cls, sandbox_id: str, *, client: _Client | None = None) -> "_AsyncSandbox":
        client = client or default_client()
        return cls(client, SandboxInfo(**await client.request("GET", f"/v1/sandboxes/{sandbox_id}")))

    @classmethod
    async def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None,
                        client: _Client | None = None) -> "_AsyncSandbox":
        """The running sandbox called `name` in the app called `app_name` (yours)."""
        client = client or default_client()
        app = await _AsyncApp.lookup(app_name, client=client)
        data = await client.request("GET", "/v1/sandboxes",
                                    params=[("app_id", app.app_id), ("name", name)])
        if not data["sandboxes"]:
            raise E.NotFoundError(f"no running sandbox named {name!r} in app {app_name!r}: "
                                  "create one with Sandbox.create(app=..., name=...)")
        return cls(client, SandboxInfo(**data["sandboxes"][0]))

    @classmethod
    async def list(cls, *, app_id: str | None = None, tags: dict[str, str] | None = None,
                   include_finished: bool = False, client: _Client | None = None) -> list["_AsyncSandbox"]:
        """Running sandboxes (all with include_finished), filtered by app and tags."""
        client = client or default_client()
        params: list[tuple[str, str]] = [("tags", json.dumps(dict(tags)))] if tags else []
        if app_id:
            params.append(("app_id", app_id))
        if include_finished:
            params.append(("all", "true"))
        data = await client.request("GET", "/v1/sandboxes", params=params)
        return [cls(client, SandboxInfo(**d)) for d in data["sandboxes"]]

    # ---- properties ---------------------------------------------------------------------
    @property
    def object_id(self) -> str:
        return self._info.sandbox_id

    @property
    def returncode(self) -> int | None:
        """The exit code once the sandbox has finished, else None."""
        return self._info.exit_code if self._info.state not in ("creating", "running") else None

    @property
    def info(self) -> SandboxInfo:
        return self._info

    @property
    def stdout(self) -> _AsyncStreamReader:
        """Output of the main command (the `args` given to create)."""
        if self._stdout is None:
            self._stdout = self._log_reader("stdout")
        return self._stdout

    @property
    def stdin(self) -> _AsyncStreamWriter:
        """stdin of the main command (Modal's `sb.stdin`): `write`, `write_eof`, `drain`."""
        if self._stdin is None:
            from ._sync import LOOP

            async def send(data: bytes | None) -> None:
                await self._client.request(
                    "POST", f"/v1/sandboxes/{self.object_id}/stdin",
                    params={"eof": "true" if data is None else "false"}, content=data or b"")
            self._stdin = _AsyncStreamWriter(send, LOOP.loop, text=True)
        return self._stdin

    @property
    def stderr(self) -> _AsyncStreamReader:
        if self._stderr is None:
            self._stderr = self._log_reader("stderr")
        return self._stderr

    def _log_reader(self, stream: str) -> _AsyncStreamReader:
        async def source(reader: _AsyncStreamReader) -> None:
            try:
                async for chunk in self._client.stream(
                        "GET", f"/v1/sandboxes/{self.object_id}/logs",
                        params={"stream": stream, "follow": "true"}):
                    reader._feed(chunk)
                reader._close()
            except BaseException as e:
                reader._close(e if isinstance(e, Exception) else None)

        # by line, as Modal's Sandbox.stdout: a line written in pieces arrives whole
        return _AsyncStreamReader(text=True, by_line=True, source=source)

    # ---- operations ---------------------------------------------------------------------
    async def refresh(self) -> SandboxInfo:
        self._info = SandboxInfo(**await self._client.request("GET", f"/v1/sandboxes/{self.object_id}"))
        return self._info

    async def exec(self, *args: str, timeout: float | None = None, workdir: str | None = None,
                   env: dict[str, str | None] | None = None, secrets: Sequence[Secret] | None = None,
                   text: bool = True, bufsize: int = -1, pty: bool = False,
                   pty_info: Any = None, stdout: Any = None, stderr: Any = None) -> _AsyncContainerProcess:
        """Run a command in the sandbox; returns at once with a process to read, write,
        signal and wait on."""
        argv = _check_args(args, "exec")
        if not argv:
            raise E.InvalidRequestError("exec() needs a command, e.g. sb.exec('ls', '-l')")
        if bufsize not in (-1, 1):
            raise E.InvalidRequestError("bufsize must be -1 (chunks) or 1 (lines)")
        size: dict[str, Any] = {}
        if pty_info is not None:  # Modal's PTYInfo (winsz_rows/cols), or a dict rows/cols
            get = pty_info.get if isinstance(pty_info, dict) else (lambda k: getattr(pty_info, k, None))
            size = {"rows": get("rows") or get("winsz_rows") or 24,
                    "cols": get("cols") or get("winsz_cols") or 80}
        req = wire_model(ExecRequest, argv=argv, workdir=workdir,
                         env=merge_env(env, secrets) or None, timeout_s=timeout,
                         pty=bool(pty or pty_info), **size)
        return await _AsyncContainerProcess._start(self._client, self.object_id, req,
                                                   text=text, bufsize=bufsize)

    # Modal's file shortcuts
    async def open(self, path: str, mode: str = "r") -> _AsyncSandboxFile:
        return _AsyncSandboxFile(self.filesystem, path, mode)

    async def ls(self, path: str = "/") -> list[str]:
        return [e.name for e in await self.filesystem.list_files(path)]

    async def mkdir(self, path: str, parents: bool = False) -> None:
        await self.filesystem.make_directory(path, parents=parents)

    async def rm(self, path: str, recursive: bool = False) -> None:
        await self.filesystem.remove(path, recursive=recursive)

    async def create_access_token(self, ttl: float = 900) -> str:
        """A token that can only exec in and read/write files of this sandbox, for `ttl`
        seconds: hand it to a less trusted component instead of your own key."""
        data = await self._client.request("POST", "/v1/tokens", json_body={
            "scope": "sandbox", "sandbox_id": self.object_id, "ttl_s": ttl})
        return data["token"]

    async def tunnels(self, timeout: float = 50) -> dict[int, Tunnel]:
        """{port: Tunnel} for the ports declared at create (`encrypted_ports`,
        `unencrypted_ports`): `tunnel.url` reaches the port from any HTTP client or browser
        with no header (an unguessable URL that ends with the sandbox), through the
        service, never directly. `timeout` is accepted for Modal compatibility."""
        info = await self.refresh()
        return await tunnels_of(self._client, self.object_id, info.encrypted_ports)

    async def forward_port(self, port: int, local_port: int = 0,
                           host: str = "127.0.0.1") -> _AsyncPortForward:
        """Listen on `host:local_port` here (0: any free port, see `.local_port`) and tunnel
        every connection to `port` inside the sandbox over the service's WebSocket, with
        this client's token: raw TCP, any protocol. Close it (or use `with`) when done."""
        if port not in (await self.tunnels()):
            raise E.NotFoundError(f"sandbox {self.object_id} does not expose port {port}: "
                                  f"declare it at create, e.g. encrypted_ports=[{port}]")
        return await _AsyncPortForward(self._client, self.object_id, port)._start(host, local_port)

    async def get_tags(self) -> dict[str, str]:
        """The sandbox's tags as the server has them now."""
        return dict((await self.refresh()).tags)

    async def set_tags(self, tags: dict[str, str]) -> None:
        """Replace the sandbox's tags (Sandbox.list(tags=...) filters on them)."""
        data = await self._client.request("PUT", f"/v1/sandboxes/{self.object_id}/tags",
                                          json_body={"tags": dict(tags)})
        self._info = SandboxInfo(**data)

    async def snapshot_filesystem(self, timeout: float = 600) -> Image:
        """A new Image holding everything this sandbox wrote, on top of the image it booted
        from; new sandboxes can boot from it. The sandbox keeps running."""
        data = await self._client.request("POST", f"/v1/sandboxes/{self.object_id}/snapshot",
                                          timeout=timeout)
        return Image.from_id(data["image_id"])

    async def terminate(self) -> None:
        """Stop the sandbox now and destroy everything it had (single use)."""
        data = await self._client.request("DELETE", f"/v1/sandboxes/{self.object_id}")
        self._info = SandboxInfo(**data)

    async def wait(self, raise_on_termination: bool = True) -> int | None:
        """Wait until the sandbox finishes; returns its exit code."""
        while True:
            data = await self._client.request("POST", f"/v1/sandboxes/{self.object_id}/wait",
                                              params={"timeout_s": FINISHED_WAIT_S},
                                              timeout=FINISHED_WAIT_S + 30)
            self._info = SandboxInfo(**data)
            if self._info.state not in ("creating", "running"):
                if self._info.state == "oom" and raise_on_termination:
                    raise E.SandboxOOMError(f"sandbox {self.object_id}: {self._info.reason}",
                                            details={"exit_code": self._info.exit_code})
                return self._info.exit_code

    async def poll(self) -> int | None:
        """The exit code if the sandbox has finished, else None."""
        await self.refresh()
        return self.returncode

    async def exec_output(self, *args: str, timeout: float | None = None,
                          stdin: str | None = None) -> dict:
        """Run a command to completion in one HTTP request; returns the ExecResult dict."""
        req = wire_model(ExecRequest, argv=_check_args(args, "exec"), timeout_s=timeout,
                         stdin=stdin)
        return await self._client.request("POST", f"/v1/sandboxes/{self.object_id}/exec",
                                          json_body=req.model_dump(mode="json"))

    def __repr__(self) -> str:
        return f"_AsyncSandbox({self.object_id!r}, state={self._info.state!r})"


class Sandbox(Wrapped, impl=_AsyncSandbox):
    """A gVisor sandbox. `Sandbox.create(...)`, `sb.exec(...)`, `sb.filesystem`,
    `sb.terminate()`, `sb.wait()`, `Sandbox.from_id(id)`, `Sandbox.from_name(app, name)`,
    `Sandbox.list(tags=...)`, `sb.set_tags(...)`.
    Every method has an async twin: `await Sandbox.create.aio(...)`."""

    create = classmethod_both("create")
    from_id = classmethod_both("from_id")
    from_name = classmethod_both("from_name")
    list = classmethod_both("list")

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.terminate()

    async def __aenter__(self) -> "Sandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.terminate.aio()

