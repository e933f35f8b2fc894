"""The SDK's async building blocks, for integrations (public SDK layer).

`Sandbox` and friends are sync wrappers (with `.aio` twins) over one async implementation.
Integrations that live on an event loop of their own (`agent_tools`: the MCP server and
`AgentTools.dispatch`) use that implementation directly:

- `Client(url=None, token=None)`: one HTTP/WebSocket connection pool to the service;
- `AsyncSandbox`: the async sandbox (`await AsyncSandbox.from_id(id, client=...)`);
- `LOOP`: the SDK's background event loop (`LOOP.run(coro)` from sync code,
  `await LOOP.run_async(coro)` from another loop).

Everything else in the package stays private.
"""

from ._client import _Client as Client
from ._sandbox import _AsyncSandbox as AsyncSandbox
from ._sync import LOOP

__all__ = ["AsyncSandbox", "Client", "LOOP"]
