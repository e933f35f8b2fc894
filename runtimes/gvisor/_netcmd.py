"""Host commands of the egress layer (runtimes layer): `ip`, `nft`, `sysctl` through the one
host-command runner, failing as `NetworkSetupError` with a hint at the host's tools.
"""

from __future__ import annotations

from .._errors import RuntimeFault
from .._hostcmd import HostCommandError, run_command


class NetworkSetupError(RuntimeFault):
    """The host could not give a sandbox its network; the message says why."""


async def run(*argv: str, check: bool = True, stdin: bytes | None = None,
              timeout_s: float = 30) -> str:
    """`argv`'s stdout; a child still running after `timeout_s` (or when the caller is
    cancelled) is killed and reaped, never left behind."""
    try:
        res = await run_command(argv, check=check, stdin=stdin, timeout_s=timeout_s)
    except HostCommandError as e:
        hint = (": check the host's nftables/iproute2" if e.result.timed_out else "")
        raise NetworkSetupError(f"{e}{hint}") from None
    return res.out
