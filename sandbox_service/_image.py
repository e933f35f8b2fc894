"""Image (public layer): Modal's Image API, as an immutable recipe built by the server.

Every method returns a new Image; nothing is sent until the image is used (by
`Sandbox.create(image=...)`) or `image.build()` is called. Then the SDK hashes local files,
uploads the ones the server lacks, and streams the server's build log (printed inside
`enable_output()`, always logged to the `sandbox_service.image` logger). The server caches
every step by content, so a rebuild of an unchanged recipe takes milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from typing import Any, Callable, Iterator, Sequence

from ._client import _Client, default_client
from ._local_files import Ignore, LocalAdd, collect, python_source
from ._secret import Secret, check_required_keys, split_secrets
from ._sync import Method
from .wire import errors as E
from .wire import is_id

log = logging.getLogger("sandbox_service.image")
_OUTPUT = {"on": 0}  # enable_output() depth: build logs go to stderr while > 0


def _secret_fields(secrets: Sequence[Secret] | None) -> dict[str, Any]:
    """A build step's secrets: inline values as `secret_env`, named ones as `secret_names`
    (the server fills them in) plus `_secret_checks` (required_keys, checked before the
    build; never sent)."""
    env, names, checks = split_secrets(None, secrets)
    out: dict[str, Any] = {"secret_env": env}
    if names:
        out["secret_names"] = names
    if checks:
        out["_secret_checks"] = checks
    return out


def _strs(what: str, items: Sequence[Any]) -> list[str]:
    flat: list[str] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_strs(what, item))
        elif isinstance(item, str):
            flat.append(item)
        else:
            raise E.InvalidRequestError(f"{what} takes strings, not {type(item).__name__}")
    return flat


class _BoundMethod:
    """`image.build(...)` blocks; `await image.build.aio(...)` does not."""

    def __init__(self, impl_name: str):
        self.impl_name = impl_name

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        return Method(functools.partial(getattr(obj, self.impl_name)), self.impl_name.lstrip("_"))


class Image:
    def __init__(self, steps: tuple = (), *, image_id: str | None = None):
        self._steps: tuple = steps          # dicts; files steps hold LocalAdd lists until built
        self._image_id = image_id

    # ---- sources ------------------------------------------------------------------------
    @classmethod
    def debian_slim(cls, python_version: str | None = None, force_build: bool = False) -> "Image":
        """Debian (minbase) with python3, pip and CA certificates. python_version picks the
        Debian release whose python3 it is (3.11: bookworm, 3.13: trixie)."""
        if python_version is not None:
            python_version = str(python_version)
        step: dict[str, Any] = {"kind": "debian_slim", "python_version": python_version}
        if force_build:
            step["force_build"] = True
        return cls((step,))

    @classmethod
    def from_registry(cls, tag: str, *, secret: Secret | None = None,
                      setup_dockerfile_commands: Sequence[str] = (), force_build: bool = False,
                      add_python: str | None = None, **kwargs: Any) -> "Image":
        """An OCI/Docker image from a registry; `secret` holds REGISTRY_USERNAME and
        REGISTRY_PASSWORD when it needs credentials."""
        if add_python:
            raise E.InvalidRequestError(
                "add_python= is not supported: pick a registry image that has Python (the "
                "agent needs python3 for files and snapshots; exec works without it)")
        if kwargs:
            raise E.InvalidRequestError(f"from_registry() does not take {', '.join(kwargs)}")
        img = cls(({"kind": "registry", "ref": tag, "force_build": force_build,
                    **_secret_fields([secret] if secret else None)},))
        if setup_dockerfile_commands:
            img = img.dockerfile_commands(*setup_dockerfile_commands)
        return img

    @classmethod
    def from_dockerfile(cls, path: str, *, context_dir: str | None = None,
                        build_args: dict[str, str] | None = None,
                        secrets: Sequence[Secret] | None = None,
                        force_build: bool = False, ignore: Ignore = None) -> "Image":
        """Build from a Dockerfile (FROM, RUN, COPY, ADD of local files, ENV, WORKDIR, ARG,
        USER, ENTRYPOINT, CMD) with the same layered builder; no Docker engine."""
        from images import From

        from ._dockerfile_apply import parse

        with open(path, encoding="utf-8") as f:
            text = f.read()
        context = os.path.abspath(context_dir or os.path.dirname(os.path.abspath(path)))
        instrs = parse(text, build_args=build_args)
        first = instrs[0]
        assert isinstance(first, From)
        if first.ref == "scratch":
            raise E.InvalidRequestError("FROM scratch is not supported: start from a registry "
                                        "image or use Image.debian_slim().dockerfile_commands")
        img = cls.from_registry(first.ref, secret=_merged_secret(secrets), force_build=force_build)
        return img._apply_instructions(instrs[1:], context, secrets, ignore)

    @classmethod
    def from_id(cls, image_id: str) -> "Image":
        if not is_id("image", image_id):
            raise E.InvalidRequestError(f"{image_id!r} is not an image id (im-...)")
        return cls(({"kind": "image", "image_id": image_id},), image_id=image_id)

    # ---- steps --------------------------------------------------------------------------
    def _then(self, step: dict[str, Any]) -> "Image":
        if not self._steps:
            raise E.InvalidRequestError("start from Image.debian_slim(), Image.from_registry() "
                                        "or Image.from_id()")
        return Image(self._steps + (step,))

    def apt_install(self, *packages: str | list[str], force_build: bool = False,
                    secrets: Sequence[Secret] = (), extra_options: str = "") -> "Image":
        pkgs = _strs("apt_install", packages)
        return self if not pkgs else self._then(
            {"kind": "apt", "packages": pkgs, "force_build": force_build,
             **_secret_fields(secrets), "extra_options": extra_options})

    def pip_install(self, *packages: str | list[str], index_url: str | None = None,
                    extra_index_url: str | None = None, find_links: str | None = None,
                    pre: bool = False, extra_options: str = "", force_build: bool = False,
                    secrets: Sequence[Secret] = ()) -> "Image":
        pkgs = _strs("pip_install", packages)
        return self if not pkgs else self._then(
            {"kind": "pip", "packages": pkgs, "index_url": index_url,
             "extra_index_url": extra_index_url, "find_links": find_links, "pre": pre,
             "extra_options": extra_options, "force_build": force_build,
             **_secret_fields(secrets)})

    def pip_install_from_requirements(self, requirements_txt: str, **kwargs: Any) -> "Image":
        with open(os.path.expanduser(requirements_txt), encoding="utf-8") as f:
            text = f.read()
        step = {"kind": "pip", "packages": [], "requirements": [text],
                "index_url": kwargs.get("index_url"), "extra_index_url": kwargs.get("extra_index_url"),
                "find_links": kwargs.get("find_links"), "pre": kwargs.get("pre", False),
                "extra_options": kwargs.get("extra_options", ""),
                "force_build": kwargs.get("force_build", False),
                **_secret_fields(kwargs.get("secrets"))}
        return self._then(step)

    def uv_pip_install(self, *packages: str | list[str], requirements: Sequence[str] | None = None,
                       index_url: str | None = None, extra_index_url: str | None = None,
                       find_links: str | None = None, pre: bool = False,
                       extra_options: str = "", force_build: bool = False,
                       secrets: Sequence[Secret] = ()) -> "Image":
        pkgs = _strs("uv_pip_install", packages)
        reqs = []
        for path in requirements or ():
            with open(os.path.expanduser(path), encoding="utf-8") as f:
                reqs.append(f.read())
        if not pkgs and not reqs:
            return self
        return self._then({"kind": "uv_pip", "packages": pkgs, "requirements": reqs,
                           "index_url": index_url, "extra_index_url": extra_index_url,
                           "find_links": find_links, "pre": pre, "extra_options": extra_options,
                           "force_build": force_build, **_secret_fields(secrets)})

    def run_commands(self, *commands: str | list[str], secrets: Sequence[Secret] = (),
                     force_build: bool = False, **_: Any) -> "Image":
        cmds = _strs("run_commands", commands)
        return self if not cmds else self._then(
            {"kind": "run", "commands": cmds, "force_build": force_build,
             **_secret_fields(secrets)})

    def env(self, vars: dict[str, str]) -> "Image":
        bad = [k for k, v in vars.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise E.InvalidRequestError(f"env() takes str keys and values; {bad[0]!r} is not")
        return self._then({"kind": "env", "env": dict(vars)})

    def workdir(self, path: str) -> "Image":
        return self._then({"kind": "workdir", "path": str(path)})

    def entrypoint(self, entrypoint_commands: list[str]) -> "Image":
        return self._then({"kind": "entrypoint", "argv": _strs("entrypoint", entrypoint_commands)})

    def cmd(self, cmd: list[str]) -> "Image":
        return self._then({"kind": "cmd", "argv": _strs("cmd", cmd)})

    def add_local_file(self, local_path: str | os.PathLike, remote_path: str, *,
                       copy: bool = False) -> "Image":
        """Copy one local file into the image (copy= is accepted for Modal compatibility:
        files always become a cached layer here)."""
        local = os.path.abspath(os.fspath(local_path))
        if remote_path.endswith("/"):
            remote_path += os.path.basename(local)
        return self._add([LocalAdd(local, remote_path)])

    def add_local_dir(self, local_path: str | os.PathLike, remote_path: str, *,
                      copy: bool = False, ignore: Ignore = ()) -> "Image":
        """Copy a local directory's content to `remote_path`; `ignore` is a list of glob
        patterns (matched against relative paths and names) or a callable(relative path)."""
        local = os.path.abspath(os.fspath(local_path))
        if not os.path.isdir(local) and not _defined_remotely():
            raise E.InvalidRequestError(f"add_local_dir: {local!r} is not a directory")
        ign = ignore if callable(ignore) else tuple(ignore or ())
        return self._add([LocalAdd(local, remote_path, ign)])

    def add_local_python_source(self, *modules: str, copy: bool = False,
                                ignore: Ignore = None) -> "Image":
        """Copy local Python packages/modules to /root in the image, importable there."""
        if _defined_remotely():
            return self
        img = self._add([python_source(m, ignore) for m in modules])
        if not any(s["kind"] == "env" and "PYTHONPATH" in s["env"] for s in self._steps):
            img = img.env({"PYTHONPATH": "/root"})
        return img

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """Modal's `with image.imports(): import numpy`: imports the image has and this
        machine may not. Outside a function container an ImportError in the block is
        ignored (the names stay undefined here); inside one it is raised as usual."""
        from ._client import in_container

        try:
            yield
        except ImportError:
            if in_container():
                raise

    def run_function(self, raw_f: Any, *, secrets: Sequence[Secret] = (), volumes: Any = None,
                     network_file_systems: Any = None, gpu: Any = None, cpu: float | None = None,
                     memory: int | None = None, timeout: float | None = 3600,
                     cloud: str | None = None, region: Any = None, force_build: bool = False,
                     args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                     include_source: bool | None = None, **_: Any) -> "Image":
        """Run `raw_f(*args, **kwargs)` once in a build container of this image (its
        module imported there, as in a function container) and keep what it writes as
        the next layer: bake model weights or a compiled cache into the image. Reruns only
        when the function's own source, its arguments, its secrets or an earlier step
        change. `timeout` is capped by the server's build-step limit; cpu/memory use the
        build settings."""
        from ._image_function import function_step

        return self._then({**function_step(raw_f, args=args, kwargs=kwargs, volumes=volumes,
                                           network_file_systems=network_file_systems, gpu=gpu,
                                           timeout=timeout, force_build=force_build),
                           **_secret_fields(secrets)})

    def _add(self, adds: list[LocalAdd], *, chown: str | None = None) -> "Image":
        for a in adds:
            if not os.path.isabs(a.remote):
                raise E.InvalidRequestError(f"remote path {a.remote!r} must be absolute")
        return self._then({"kind": "files", "adds": adds, "chown": chown})

    def dockerfile_commands(self, *commands: str | list[str], context_dir: str | None = None,
                            secrets: Sequence[Secret] = (), ignore: Ignore = None) -> "Image":
        """Dockerfile instructions (no FROM) on top of this image."""
        from ._dockerfile_apply import parse

        lines = _strs("dockerfile_commands", commands)
        instrs = parse("FROM sbx-parent\n" + "\n".join(lines))
        context = os.path.abspath(context_dir or os.getcwd())
        return self._apply_instructions(instrs[1:], context, secrets, ignore)

    def _apply_instructions(self, instrs: list, context: str, secrets: Any,
                            ignore: Ignore) -> "Image":
        from ._dockerfile_apply import apply_instructions

        return apply_instructions(self, instrs, context, secrets, ignore)

    # ---- building -----------------------------------------------------------------------
    def _ref(self) -> str:
        if self._image_id:
            return self._image_id
        if self._steps == ({"kind": "debian_slim", "python_version": None},):
            return "debian_slim"
        raise E.InvalidRequestError("this image is not built yet: call image.build() first")

    async def _resolve(self, client: _Client | None = None) -> str:
        """The id to boot from, building the image first if needed."""
        try:
            return self._ref()
        except E.InvalidRequestError:
            pass
        await self._build(client=client)
        return self._image_id  # type: ignore[return-value]

    async def _build(self, app: Any = None, *, client: _Client | None = None,
                     force_build: bool = False) -> "Image":
        client = client or default_client()
        steps, blobs = self._wire_steps()
        await check_required_keys(client, [c for s in self._steps for c in s.get("_secret_checks", ())])
        if blobs:
            missing = (await client.request("POST", "/v1/blobs/missing",
                                            json_body={"digests": sorted(blobs)}))["missing"]
            for digest in missing:
                await client.request("PUT", f"/v1/blobs/{digest}", content=_file_chunks(blobs[digest]),
                                     timeout=600)
        body = {"steps": steps, "force_build": force_build}
        info = await _stream_build(client, body, _printer())
        self._image_id = info["image_id"]
        return self

    build = _BoundMethod("_build")

    def _wire_steps(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        steps, blobs = [], {}
        for step in self._steps:
            if step["kind"] == "files":
                entries, found = collect(step["adds"])
                blobs.update(found)
                steps.append({"kind": "files", "entries": entries, "chown": step.get("chown")})
            elif step["kind"] == "function":
                entries, found = collect(step["adds"])
                blobs.update(found)
                steps.append({**{k: v for k, v in step.items()
                                 if k not in ("adds", "_secret_checks")}, "entries": entries})
            else:
                steps.append({k: v for k, v in step.items() if k != "_secret_checks"})
        return steps, blobs

    @property
    def object_id(self) -> str:
        if not self._image_id:
            raise E.InvalidRequestError("the image has no id until it is built: call "
                                        "image.build() first")
        return self._image_id

    def __repr__(self) -> str:
        if self._image_id:
            return f"Image({self._image_id!r})"
        return f"Image({' -> '.join(s['kind'] for s in self._steps)})"


def _defined_remotely() -> bool:
    """True while the user's module is imported inside a function container or an image
    build (run_function): its images are only defined there, never built, so local paths
    that exist only on the user's machine are not checked."""
    from ._client import in_container
    from ._config import in_image_build

    return in_container() or in_image_build()


def _merged_secret(secrets: Sequence[Secret] | None) -> Secret | None:
    env, names, checks = split_secrets(None, secrets)
    if not env and not names:
        return None
    required = dict(checks)
    return Secret(env, refs=[(n, tuple(required.get(n, ()))) for n in names])


async def _file_chunks(path: str):
    import asyncio

    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            yield chunk


def _printer() -> Callable[[str], None]:
    def emit(line: str) -> None:
        log.info("%s", line)
        if _OUTPUT["on"] > 0:
            print(line, file=sys.stderr, flush=True)
    return emit


async def _stream_build(client: _Client, body: dict[str, Any],
                        emit: Callable[[str], None]) -> dict[str, Any]:
    buf = b""
    final: dict[str, Any] | None = None
    async for chunk in client.stream("POST", "/v1/images", json_body=body):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            if not raw.strip():
                continue
            ev = json.loads(raw)
            if ev.get("type") == "log":
                emit(ev.get("line", ""))
            else:
                final = ev
    if final is None:
        raise E.ImageBuildError("the server closed the build stream without a result: check "
                                "the server's log, then build again (finished steps are cached)")
    if final["type"] == "error":
        raise E.error_from_wire(400, {"error": final["error"]})
    return final["image"]
