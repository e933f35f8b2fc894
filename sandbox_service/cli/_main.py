"""The `sbx` command (public layer; must not import the server). Server imports happen
inside `serve` only, so client commands start fast and never need FastAPI.

    sbx serve                      run the service on this machine
    sbx doctor [--json]            check runsc, cgroups, root, disk and the server
    sbx sandbox create|ls|get|exec|rm|port-forward
    sbx image build FILE::VAR | ls | get | rm | gc
    sbx audit [--object ID] [--action A] [--since 2h]
    sbx token create|ls|revoke
    sbx shell [SANDBOX_ID] [-- CMD]
    sbx run FILE[::NAME] [--arg v]  run an app's entrypoint or function (Modal's `modal run`)
    sbx deploy FILE                deploy an app's functions (`modal deploy`)
    sbx app ls|logs|stop|history   apps with functions
    sbx container ls|logs|exec|stop  the containers that serve functions
    sbx mcp                        the agent tools over MCP (stdio)

Client commands use the SDK; its errors print `sbx: <message>` and exit 1 (usage errors 2).
"""

from __future__ import annotations

import logging
import sys

import click

from .._config import DEFAULT_PORT
from .._version import __version__
from . import _apps, _run
from ._audit import audit
from ._common import SbxGroup
from ._doctor import doctor
from ._image import image
from ._kv import dict_group, queue_group
from ._mcp import mcp
from ._ports import port_forward  # noqa: F401 (registers `sbx sandbox port-forward`)
from ._sandbox import sandbox
from ._secret import secret
from ._shell import shell
from ._token import token
from ._volume import volume_group


@click.group(cls=SbxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sbx")
def main() -> None:
    """sandbox-service: gVisor sandboxes for agents (server and client)."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(host: str, port: int, log_level: str) -> None:
    """Run the whole service on this machine (state in $SBX_HOME, default ~/.sbx)."""
    import uvicorn

    from ..server import Settings, begin_shutdown, create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(host=host, port=port)
    try:
        app = create_app(settings)
    except Exception as e:
        click.echo(f"sbx serve: {e}", err=True)
        sys.exit(1)
    click.echo(f"sbx {__version__}: serving on http://{host}:{port} (token in {settings.home}/token)",
               err=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            ws="websockets-sansio" if _has_sansio() else "websockets")

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            begin_shutdown(app)  # long-polls answer now instead of holding the shutdown up
            super().handle_exit(sig, frame)

    _Server(config).run()


main.add_command(audit)
main.add_command(dict_group)
main.add_command(doctor)
main.add_command(image)
main.add_command(mcp)
main.add_command(queue_group)
main.add_command(volume_group)
main.add_command(sandbox)
main.add_command(secret)
main.add_command(shell)
main.add_command(token)
_run.register(main)
_apps.register(main)


def _has_sansio() -> bool:
    try:
        import uvicorn.protocols.websockets.websockets_sansio_impl  # noqa: F401
        return True
    except ImportError:
        return False
