"""`sbx mcp`: the MCP server over stdio (public layer; must not import the server).

Imports `agent_tools` (and with it the `mcp` SDK) only when run, so other commands stay fast.
"""

from __future__ import annotations

import asyncio
import logging

import click


@click.command("mcp")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def mcp(log_level: str) -> None:
    """Serve the sandbox tools over MCP on stdin/stdout (for desktop and CLI agents).

    Talks to the server at SBX_URL with SBX_TOKEN, like the other commands. Sandboxes it
    created are destroyed when the client disconnects.
    """
    from agent_tools import serve_stdio

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # stderr
    asyncio.run(serve_stdio())
