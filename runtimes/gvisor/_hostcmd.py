"""Host commands for the egress layer, run without blocking the event loop (runtimes layer).

Must not import the server.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("sbx.runtime.netns")


class NetworkSetupError(Exception):
    """The host could not give a sandbox its network; the message says why."""


async def run(*argv: str, check: bool = True, stdin: bytes | None = None,
              timeout_s: float = 30) -> str:
    """`argv`'s stdout; a child still running after `timeout_s` (or when the caller is
    cancelled) is killed and reaped, never left behind."""
    log.debug("netns: %s", " ".join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    except BaseException as e:
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await asyncio.shield(proc.wait())
        if isinstance(e, asyncio.TimeoutError):
            log.error("netns: %s did not finish in %gs: killed", " ".join(argv[:4]), timeout_s)
            raise NetworkSetupError(f"{' '.join(argv[:4])} did not finish in {timeout_s:g}s "
                                    "(killed): check the host's nftables/iproute2") from None
        raise
    if check and proc.returncode != 0:
        raise NetworkSetupError(f"{' '.join(argv[:4])} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")
