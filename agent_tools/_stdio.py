"""`sbx mcp`: the MCP server over stdio (agent-tools layer). Acts with SBX_URL / SBX_TOKEN
like the rest of the CLI; the sandboxes it created are terminated when the client
disconnects (stdin closes). Logs go to stderr: stdout belongs to the protocol.
Must not import the server or a runtime.
"""

from __future__ import annotations

import asyncio

from sandbox_service.aio import Client

from ._mcp import FixedClient, create_mcp_server


async def serve_stdio(url: str | None = None, token: str | None = None) -> None:
    client = Client(url, token)
    server, host = create_mcp_server(FixedClient(client))
    reaper = asyncio.ensure_future(host.registry.run_reaper())
    try:
        await server.run_stdio_async()
    finally:
        reaper.cancel()
        await host.registry.close_all()
        await client.close()
