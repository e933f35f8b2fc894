"""HTTP and WebSocket transport to the server (public layer, async only).

Maps every error response through `wire.error_from_wire`; a refused connection becomes
`ServerUnreachableError` with what to do. The httpx transport can be injected, so tests of
the SDK's own logic need no network. Must not import the server or FastAPI.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, AsyncIterator, TypeVar

from ._config import sbx_token, sbx_url
from ._version import __version__
from .wire import errors as E
from .wire import validation_message

if TYPE_CHECKING:  # httpx and pydantic load with the first client or model, not at import
    import httpx

M = TypeVar("M")


def wire_model(model: type[M], **fields: Any) -> M:
    """Build a request with the wire model the server validates with (both ends share
    it), so a bad argument fails here, before any network, as `InvalidRequestError`."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as e:
        raise E.InvalidRequestError(validation_message(e)) from None


class _Client:
    """One server connection (URL + token). Lives on the SDK loop."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 transport: "httpx.AsyncBaseTransport | None" = None):
        import httpx

        self.url = (url or sbx_url()).rstrip("/")
        self.token = token if token is not None else sbx_token()
        headers = {"User-Agent": f"sandbox-service-sdk/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._headers = headers
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, transport=transport,
                                       timeout=httpx.Timeout(30.0, connect=10.0, read=None))

    def _unreachable(self, e: Exception) -> E.ServerUnreachableError:
        return E.ServerUnreachableError(
            f"cannot reach the sandbox service at {self.url} ({type(e).__name__}): start it "
            "with `sbx serve`, or set SBX_URL to where it runs")

    async def _raise_for(self, resp: "httpx.Response") -> None:
        if resp.status_code < 400:
            return
        await resp.aread()
        try:
            body = resp.json()
        except ValueError:
            body = None
        exc = E.error_from_wire(resp.status_code, body)
        if resp.status_code == 401 and not self.token:
            exc.message += (". No token found: set SBX_TOKEN or run on the server's machine "
                            "where $SBX_HOME/token exists")
            exc.args = (exc.message,)
        raise exc

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      params: Any = None, content: Any = None,
                      timeout: float | None = None) -> Any:
        import httpx

        try:
            resp = await self._http.request(
                method, path, json=json_body, params=params, content=content,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
        except httpx.TimeoutException as e:
            raise E.SandboxTimeoutError(f"{method} {path} got no answer in time: {e}") from None
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
        await self._raise_for(resp)
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.content

    async def stream(self, method: str, path: str, *, params: Any = None,
                     json_body: Any = None) -> AsyncIterator[bytes]:
        import httpx

        try:
            async with self._http.stream(method, path, params=params, json=json_body) as resp:
                await self._raise_for(resp)
                async for chunk in resp.aiter_bytes():
                    yield chunk
        except httpx.TransportError as e:
            raise self._unreachable(e) from None

    async def websocket(self, path: str):
        from websockets.asyncio.client import connect

        if _CHANNEL:  # inside a function container: over the runner's connection
            from ._channel import channel_websocket

            return await channel_websocket(_CHANNEL[0], path)
        url = "ws" + self.url[4:] + path if self.url.startswith("http") else self.url + path
        try:
            return await connect(url, additional_headers=self._headers, max_size=None,
                                 compression=None, open_timeout=30, ping_interval=20,
                                 ping_timeout=60)
        except OSError as e:
            raise self._unreachable(e) from None

    async def close(self) -> None:
        await self._http.aclose()


def ws_error(frame: dict) -> E.SandboxError:
    return E.error_from_wire(0, {"error": {k: v for k, v in frame.items() if k != "type"}})


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


_DEFAULT: dict[str, _Client] = {}
_CHANNEL: list[Any] = []  # inside a function container: the runner


def set_container_channel(runner: Any) -> None:
    _CHANNEL[:] = [runner]


def in_container() -> bool:
    return bool(_CHANNEL)


def default_client() -> _Client:
    """The client for SBX_URL/SBX_TOKEN, made on first use on the SDK loop and reused.
    Inside a function container: the client over the runner's channel."""
    if _CHANNEL:
        client = _DEFAULT.get("channel")
        if client is None:
            from ._channel import channel_transport

            client = _DEFAULT["channel"] = _Client("http://sbx.container", token="",
                                                   transport=channel_transport(_CHANNEL[0]))
        return client
    key = f"{sbx_url()}|{sbx_token()}"
    client = _DEFAULT.get(key)
    if client is None:
        client = _DEFAULT[key] = _Client()
    return client
