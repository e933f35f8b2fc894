"""A LangChain agent using the sandbox tools through the MCP adapter, over streamable HTTP.

    pip install langchain langchain-mcp-adapters langchain-openai langgraph
    sbx serve &                          # once
    SBX_TOKEN=... OPENAI_API_KEY=... python examples/agent_langchain_mcp.py "what is 2**100?"

`connection()` is what the adapter needs (the server's /mcp and your bearer token);
`run_tool_call` shows what happens to one tool call the model makes: it goes to /mcp as
`tools/call`, with the same token (and the same access rules) as the REST API.
"""

from __future__ import annotations

import asyncio
import sys

from sandbox_service._config import sbx_token, sbx_url


def connection(url: str | None = None, token: str | None = None) -> dict:
    return {"transport": "streamable_http", "url": (url or sbx_url()) + "/mcp",
            "headers": {"Authorization": f"Bearer {token or sbx_token()}"}}


async def run_tool_call(tool_call: dict, url: str | None = None, token: str | None = None):
    """Execute one LangChain tool call ({"name", "args"}) over MCP; returns the result."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    conn = connection(url, token)
    http = create_mcp_http_client(headers=conn["headers"])
    async with Client(streamable_http_client(conn["url"], http_client=http)) as client:
        return await client.call_tool(tool_call["name"], tool_call["args"])


async def main(prompt: str) -> None:
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langgraph.prebuilt import create_react_agent

    client = MultiServerMCPClient({"sandbox": connection()})
    agent = create_react_agent("openai:gpt-4.1", await client.get_tools())
    result = await agent.ainvoke({"messages": [{"role": "user", "content": prompt}]})
    print(result["messages"][-1].content)


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "Compute the 20th Fibonacci number with Python."))
