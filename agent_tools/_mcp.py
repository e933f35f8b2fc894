"""The MCP server (agent-tools layer): one `MCPServer` (the official `mcp` SDK, 2.x) whose
tools are generated from the `TOOLS` table and run through `Toolbox`.

Who the caller is comes from a `ClientSource`: the stdio transport uses one client from
SBX_URL / SBX_TOKEN; the HTTP mount (`_http.py`) builds a client per caller token. Results
are structured content plus a text copy, images as image content, large files as resource
links (readable through the `sbx://sandboxes/{id}/files/{path}` resource template).
Anticipated failures raise the SDK's `ToolError`, so their text reaches the model.
Must not import the server or a runtime.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextContent, ToolAnnotations

from sandbox_service import __version__
from sandbox_service.aio import Client
from sandbox_service.wire import errors as E

from ._defs import input_schema
from ._models import TOOLS, ToolSpec
from ._scopes import ScopeRegistry
from ._toolbox import Outcome, Toolbox, ToolFailure

log = logging.getLogger("sbx.agent_tools")

INSTRUCTIONS = (
    "Tools to run untrusted code in isolated gVisor sandboxes. For one-off code use run_code. "
    "To keep files or state between calls, create_sandbox once and pass its sandbox_id to "
    "exec_command, read_file, write_file, list_files and run_code; create_context + "
    "run_in_context keep Python variables between calls. terminate_sandbox when done; "
    "sandboxes also end on their own after their idle timeout.")


class ClientSource(Protocol):
    async def for_call(self, ctx: Context) -> tuple[Client, str]:
        """The SDK client acting as this call's caller, and its scope key (the call holds
        the client until `release`, if the source has one)."""


class FixedClient:
    """One client for every call (stdio, tests): the process's own SBX_URL / SBX_TOKEN."""

    def __init__(self, client: Client | None = None):
        self._client = client

    async def for_call(self, ctx: Context) -> tuple[Client, str]:
        if self._client is None:
            self._client = Client()
        return self._client, "local"


def token_key(token: str | None) -> str:
    return "token:" + hashlib.sha256((token or "").encode()).hexdigest()[:32]


def _connection(ctx: Context) -> Any:
    session = ctx.request_context.session
    return getattr(session, "connection", None) or getattr(session, "_connection", None)


def _outcome_result(outcome: Outcome) -> CallToolResult:
    content: list[Any] = [TextContent(type="text", text=outcome.text)]
    for data, mime in outcome.images:
        content.append(ImageContent(type="image", data=base64.b64encode(data).decode(),
                                    mime_type=mime))
    for link in outcome.links:
        content.append(ResourceLink(type="resource_link", uri=link["uri"], name=link["name"],
                                    mime_type=link.get("mime_type"), size=link.get("size")))
    return CallToolResult(content=content, is_error=outcome.is_error,
                          structured_content=outcome.structured.model_dump(mode="json"))


class ToolHost:
    """Binds the tool table to a client source and a scope registry."""

    def __init__(self, source: ClientSource, registry: ScopeRegistry):
        self.source = source
        self.registry = registry

    @contextlib.asynccontextmanager
    async def toolbox(self, ctx: Context, *, progress: bool = True) -> AsyncIterator[Toolbox]:
        """This call's toolbox; its client is released (to the source) when the call ends."""
        client, key = await self.source.for_call(ctx)
        try:
            yield self._toolbox(ctx, client, key, progress)
        finally:
            release = getattr(self.source, "release", None)
            if release is not None:
                release(client)

    def _toolbox(self, ctx: Context, client: Client, key: str, progress: bool) -> Toolbox:
        conn = _connection(ctx)
        session_id = getattr(conn, "session_id", None)
        if session_id:  # a real MCP session: its sandboxes end with it
            key = f"session:{session_id}"
            if not conn.state.get("sbx_cleanup"):
                conn.state["sbx_cleanup"] = True
                conn.exit_stack.push_async_callback(self.registry.close, key)
        scope = self.registry.get(key, client.token)

        async def report(done: float, total: float | None, message: str | None) -> None:
            try:
                await ctx.report_progress(done, total, message)
            except Exception:  # a client that went away must not fail the run
                pass

        return Toolbox(client, scope, progress=report if progress else None)

    def make_tool(self, spec: ToolSpec) -> Tool:
        args_model = type(f"{spec.input.__name__}Args", (spec.input, ArgModelBase), {})

        async def run(ctx: Context, **kwargs: Any) -> CallToolResult:
            try:
                async with self.toolbox(ctx) as box:
                    outcome = await box.call(spec.name, spec.input.model_validate(kwargs))
            except ToolFailure as e:
                if e.outcome is not None:
                    return _outcome_result(e.outcome)
                raise ToolError(str(e)) from None
            except E.SandboxError as e:
                raise ToolError(f"{spec.name} failed [{e.code}]: {e}") from None
            return _outcome_result(outcome)

        run.__name__ = spec.name
        return Tool(fn=run, name=spec.name, title=spec.name.replace("_", " "),
                    description=spec.description, parameters=input_schema(spec),
                    fn_metadata=FuncMetadata(arg_model=args_model, output_model=spec.output),
                    is_async=True, context_kwarg="ctx",
                    annotations=ToolAnnotations(read_only_hint=spec.read_only,
                                                destructive_hint=spec.destructive,
                                                open_world_hint=False))

    async def read_file_resource(self, sandbox_id: str, path: str, ctx: Context) -> bytes:
        from sandbox_service.aio import AsyncSandbox

        try:
            async with self.toolbox(ctx, progress=False) as box:
                sb = await AsyncSandbox.from_id(sandbox_id, client=box.client)
                return await sb.filesystem.read_bytes("/" + path)
        except E.SandboxError as e:
            raise ResourceError(f"reading /{path} in {sandbox_id} failed [{e.code}]: {e}") from None


def create_mcp_server(source: ClientSource | None = None, registry: ScopeRegistry | None = None,
                      **server_kwargs: Any) -> tuple[MCPServer, ToolHost]:
    """The MCP server with every tool; `server_kwargs` go to `MCPServer` (auth settings and
    token verifier for the HTTP mount)."""
    host = ToolHost(source or FixedClient(), registry or ScopeRegistry(_terminate_with(source)))
    server = MCPServer("sandbox-service", title="sandbox-service", version=__version__,
                       instructions=INSTRUCTIONS,
                       tools=[host.make_tool(spec) for spec in TOOLS], **server_kwargs)

    @server.resource("sbx://sandboxes/{sandbox_id}/files/{+path}", name="sandbox_file",
                     description="a file inside a sandbox", mime_type="application/octet-stream")
    async def sandbox_file(sandbox_id: str, path: str, ctx: Context) -> bytes:
        return await host.read_file_resource(sandbox_id, path, ctx)

    return server, host


def _terminate_with(source: ClientSource | None) -> Callable[[list[str], str | None], Awaitable[None]]:
    async def terminate(ids: list[str], token: str | None) -> None:
        from sandbox_service.aio import AsyncSandbox

        client = Client(token=token) if not isinstance(source, FixedClient) or source._client is None \
            else source._client
        for sid in ids:
            try:
                await (await AsyncSandbox.from_id(sid, client=client)).terminate()
            except E.SandboxError:
                pass

    return terminate
