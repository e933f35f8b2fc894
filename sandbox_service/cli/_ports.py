"""`sbx sandbox port-forward ID PORT [LOCAL]` (public layer; must not import the server).

Like `kubectl port-forward`: listens on LOCAL (default: the same number as PORT; 0 picks a
free one) on 127.0.0.1 and tunnels every connection to PORT inside the sandbox over the
service's authenticated WebSocket, with this client's token. Runs until Ctrl-C or until
the sandbox finishes. A browser pointed at the local address reaches a web app inside the
sandbox without ever holding a token.
"""

from __future__ import annotations

import asyncio
import contextlib

import click

from ._sandbox import sandbox

POLL_S = 2.0


@sandbox.command("port-forward")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="local address to listen on (keep it loopback unless you mean to share it)")
@click.argument("sandbox_id")
@click.argument("port", type=click.IntRange(1, 65535))
@click.argument("local_port", required=False, type=click.IntRange(0, 65535))
def port_forward(address: str, sandbox_id: str, port: int, local_port: int | None) -> None:
    """Forward LOCAL_PORT on this machine to PORT inside sandbox SANDBOX_ID (a port it
    declared with encrypted_ports/unencrypted_ports)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_forward(address, sandbox_id, port,
                             port if local_port is None else local_port))


async def _forward(address: str, sandbox_id: str, port: int, local_port: int) -> None:
    from .._client import _Client
    from .._sandbox import _AsyncSandbox

    client = _Client()
    try:
        sb = await _AsyncSandbox.from_id(sandbox_id, client=client)
        try:
            pf = await sb.forward_port(port, local_port=local_port, host=address)
        except OSError as e:
            raise click.ClickException(f"cannot listen on {address}:{local_port}: "
                                       f"{e.strerror or e}") from None
        click.echo(f"Forwarding from {pf.address} -> {sandbox_id}:{port} (Ctrl-C to stop)",
                   err=True)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                while (await sb.poll()) is None:
                    await asyncio.sleep(POLL_S)
                click.echo(f"sbx: sandbox {sandbox_id} finished ({sb.info.state}); "
                           "stopped forwarding", err=True)
        finally:
            await pf.close()
    finally:
        await client.close()
