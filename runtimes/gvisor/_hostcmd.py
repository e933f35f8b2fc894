"""Host commands for the egress layer, run without blocking the event loop (runtimes layer).

Must not import the server.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("sbx.runtime.netns")


class NetworkSetupError(Exception):
    """The host could not give a sandbox its network; the message says why."""


async def run(*argv: str, check: bool = True, stdin: bytes | None = None) -> str:
    log.debug("netns: %s", " ".join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    if check and proc.returncode != 0:
        raise NetworkSetupError(f"{' '.join(argv[:4])} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")
