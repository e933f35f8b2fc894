"""agent_tools: the sandbox tools for LLM agents (agent-tools layer).

- `create_mcp_server()` / `sbx mcp` (stdio) / `/mcp` on the server (streamable HTTP);
- `openai_chat_tools(strict=)`, `openai_responses_tools(strict=)`, `anthropic_tools()`;
- `AgentTools().dispatch(name, arguments)` (or module-level `dispatch`) to execute a call.

All generated from the models in `_models.TOOLS`. Importing this package does not import
`mcp` (only `create_mcp_server` does), the server, or a runtime.
"""

from ._defs import (
    AgentTools,
    anthropic_tools,
    dispatch,
    input_schema,
    openai_chat_tools,
    openai_responses_tools,
    output_schema,
    strict_schema,
)
from ._models import TOOLS, TOOLS_BY_NAME, ToolSpec
from ._toolbox import Outcome, ToolFailure


def create_mcp_server(*args, **kwargs):
    """The MCP server (see `_mcp.create_mcp_server`); imports `mcp` on first use."""
    from ._mcp import create_mcp_server as create

    return create(*args, **kwargs)


def mount_mcp(*args, **kwargs):
    """Mount `/mcp` on the server's app (see `_http.mount_mcp`); imports `mcp` on first use."""
    from ._http import mount_mcp as mount

    return mount(*args, **kwargs)


def serve_stdio(*args, **kwargs):
    """`sbx mcp`: the MCP server on stdin/stdout (see `_stdio.serve_stdio`)."""
    from ._stdio import serve_stdio as serve

    return serve(*args, **kwargs)


__all__ = ["AgentTools", "Outcome", "TOOLS", "TOOLS_BY_NAME", "ToolFailure", "ToolSpec",
           "anthropic_tools", "create_mcp_server", "dispatch", "input_schema",
           "mount_mcp", "openai_chat_tools", "openai_responses_tools", "output_schema",
           "serve_stdio", "strict_schema"]
