"""Running debootstrap for the base image (images layer).

debootstrap runs as an argument list through asyncio, in its own session so that it and
everything it starts (dpkg in the chroot, wget) can be killed as a group when the build is
cancelled. Its output (info lines go to stderr, so both streams are merged) is streamed line
by line to the log and the progress callback; the last lines are kept for the error.

This module must not import the server (`sandbox_service.server`) or FastAPI.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
from typing import Any, Callable

from runtimes import start_command, stop_command

from ._model import ImageBuildError

log = logging.getLogger("sbx.images")

TAIL_LINES = 50
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_debootstrap() -> str:
    path = shutil.which("debootstrap") or shutil.which("debootstrap", path=_SBIN_PATH)
    if not path:
        raise ImageBuildError(
            "debootstrap is not installed: run `apt-get install debootstrap` (Debian/Ubuntu) "
            "on the host, then retry; it is needed once to build the base image")
    return path


def debootstrap_argv(binary: str, recipe: dict[str, Any], target: str, mirror: str) -> list[str]:
    return [binary, f"--variant={recipe['variant']}",
            "--include=" + ",".join(recipe["include"]), recipe["suite"], target, mirror]


async def run_debootstrap(recipe: dict[str, Any], target: str, mirror: str,
                          emit: Callable[[str], None]) -> None:
    """Bootstrap `recipe` into `target` (which must not exist yet or be empty)."""
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the base image runs debootstrap, which needs root: start the service "
            "as root (or build the image once as root into the same images directory)")
    argv = debootstrap_argv(find_debootstrap(), recipe, target, mirror)
    env = dict(os.environ)
    env.update({"LC_ALL": "C", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive",
                "PATH": _SBIN_PATH + ":" + env.get("PATH", "")})
    log.info("running %s", " ".join(argv))
    proc = await start_command(argv, merge_stderr=True, env=env)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        assert proc.stdout is not None
        async for line in _lines(proc.stdout):
            tail.append(line)
            log.debug("debootstrap: %s", line)
            if line[:2] in ("I:", "W:", "E:"):
                emit(line)
        rc = await proc.wait()
    except BaseException:  # debootstrap and dpkg in the chroot: none may keep writing
        await stop_command(proc, grace_s=5.0)
        raise
    if rc != 0:
        shown = "\n".join(tail) or "(no output)"
        raise ImageBuildError(
            f"debootstrap failed with exit code {rc} (suite {recipe['suite']}, mirror "
            f"{mirror}). Check that the mirror is reachable from this host, or point "
            f"SBX_DEBIAN_MIRROR at a reachable Debian mirror, then retry. "
            f"Last {len(tail)} lines of its output:\n{shown}")
    log.info("debootstrap finished into %s", target)


async def _lines(stream: asyncio.StreamReader):
    """Decoded lines of `stream`, without the limit on line length of readline()."""
    buf = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            yield raw.decode(errors="replace").rstrip()
    if buf:
        yield buf.decode(errors="replace").rstrip()
