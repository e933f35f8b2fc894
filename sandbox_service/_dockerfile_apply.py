"""Turning parsed Dockerfile instructions into Image steps (public layer).

The parser (`images.parse_dockerfile`) knows Dockerfile syntax; this module knows what each instruction
means for an Image: RUN -> run_commands (ARG values in the command's environment only),
COPY/ADD -> local files from the build context (Docker's rules: a directory's *content*
is copied, a trailing '/' or several sources make the destination a directory), ENV,
WORKDIR, USER, ENTRYPOINT, CMD -> config steps. Stdlib only besides the SDK.
"""

from __future__ import annotations

import glob
import os
import shlex
from typing import TYPE_CHECKING, Any

from images import Cmd, Copy, DockerfileError, Entrypoint, Env, Run, User, Workdir
from images import parse_dockerfile as _parse

from ._local_files import LocalAdd
from .wire import errors as E

if TYPE_CHECKING:
    from ._image import Image


def parse(text: str, build_args: dict[str, str] | None = None) -> list:
    """The Dockerfile's instructions; a parse error is the SDK's `InvalidRequestError`."""
    try:
        return _parse(text, build_args=build_args)
    except DockerfileError as e:
        raise E.InvalidRequestError(str(e)) from None


def _run_command(ins: Run) -> str:
    cmd = ins.shell if ins.shell is not None else shlex.join(ins.argv or [])
    if ins.build_env:
        assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(ins.build_env.items()))
        cmd = f"export {assigns}; {cmd}"
    return cmd


def _copy_adds(ins: Copy, context: str, ignore: Any) -> list[LocalAdd]:
    sources: list[str] = []
    for src in ins.sources:
        pattern = os.path.join(context, src)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(src) else [pattern]
        if not matches or not all(os.path.lexists(m) for m in matches):
            raise E.InvalidRequestError(
                f"Dockerfile line {ins.line}: COPY source {src!r} not found in the build "
                f"context {context}")
        root = os.path.realpath(context)
        for m in matches:  # a symlink in the context must not reach outside it (as Docker)
            real = os.path.realpath(m)
            if real != root and not real.startswith(root + os.sep):
                raise E.InvalidRequestError(
                    f"Dockerfile line {ins.line}: COPY source {src!r} leads outside the build "
                    f"context ({real}) through a symbolic link")
        sources.extend(matches)
    many = len(sources) > 1
    dest = ins.dest
    if many and not dest.endswith("/"):
        raise E.InvalidRequestError(f"Dockerfile line {ins.line}: with several sources the "
                                    f"destination must be a directory ending in '/' ({dest!r})")
    adds = []
    for src in sources:
        if os.path.isdir(src):
            adds.append(LocalAdd(src, dest.rstrip("/") or "/", ignore if not callable(ignore)
                                 else ignore, ins.chmod))
        else:
            remote = dest + os.path.basename(src) if dest.endswith("/") else dest
            adds.append(LocalAdd(src, remote, None, ins.chmod))
    return adds


def apply_instructions(image: Image, instrs: list, context: str, secrets: Any,
                       ignore: Any) -> Image:
    ign = ignore if callable(ignore) else tuple(ignore or ())
    for ins in instrs:
        if isinstance(ins, Run):
            image = image.run_commands(_run_command(ins), secrets=secrets or ())
        elif isinstance(ins, Copy):
            image = image._add(_copy_adds(ins, context, ign), chown=ins.chown)
        elif isinstance(ins, Env):
            image = image.env(dict(ins.values))
        elif isinstance(ins, Workdir):
            image = image.workdir(ins.path)
        elif isinstance(ins, User):
            image = image._then({"kind": "user", "user": ins.user})
        elif isinstance(ins, Entrypoint):
            image = image.entrypoint(list(ins.argv))
        elif isinstance(ins, Cmd):
            image = image.cmd(list(ins.argv))
        else:  # the parser rejects everything else; a second FROM never gets here
            raise E.InvalidRequestError(f"Dockerfile line {getattr(ins, 'line', '?')}: "
                                        f"{type(ins).__name__} is not supported")
    return image
