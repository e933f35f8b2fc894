"""Function, FunctionCall and Retries (public layer): what `@app.function` gives back.

`_Function` is the one async implementation; `Function` the sync wrapper with `.aio`
twins (`f.remote(x)`, `await f.remote.aio(x)`, `for y in f.map(xs)`, `async for y in
f.map.aio(xs)`). A function gets its server id when its app runs (`with app.run()`, `sbx
run`), is deployed, or is looked up (`Function.from_name`).
"""

from __future__ import annotations

import inspect
import time
from typing import Any, AsyncIterator, Callable, Iterable

from . import _invocation as inv
from ._client import _Client, default_client
from ._sync import GenMethod, Wrapped
from .wire import errors as E


class Retries:
    """Modal's `Retries(max_retries, backoff_coefficient=2.0, initial_delay=1.0,
    max_delay=60.0)`: an input that raises (or times out) runs again, up to `max_retries`
    more times, waiting initial_delay * backoff_coefficient**(n-1), at most max_delay."""

    def __init__(self, *, max_retries: int, backoff_coefficient: float = 2.0,
                 initial_delay: float = 1.0, max_delay: float = 60.0):
        from ._client import wire_model
        from .wire import RetryPolicy

        self.max_retries = max_retries
        self.backoff_coefficient = backoff_coefficient
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._policy = wire_model(RetryPolicy, max_retries=max_retries,
                                  backoff_coefficient=backoff_coefficient,
                                  initial_delay_s=initial_delay, max_delay_s=max_delay)

    def __repr__(self) -> str:
        return (f"Retries(max_retries={self.max_retries}, backoff_coefficient="
                f"{self.backoff_coefficient}, initial_delay={self.initial_delay}, "
                f"max_delay={self.max_delay})")


async def lookup(app_name: str, name: str) -> tuple[_Client, dict[str, Any]]:
    """(client, FunctionInfo as JSON) of a deployed app's function or class."""
    client = default_client()
    info = await client.request("GET", "/v1/functions/lookup",
                                params={"app": app_name, "name": name})
    return client, info


class _Function:
    def __init__(self, raw_f: Callable | None, tag: str, *, app: Any = None,
                 options: dict[str, Any] | None = None, is_generator: bool = False,
                 cls: Any = None, method: str | None = None, params_b64: str | None = None,
                 from_name: tuple[str, str] | None = None,
                 overrides: dict[str, Any] | None = None):
        self._raw_f = raw_f
        self._overrides = overrides or None
        self._sbx_raw_f = raw_f
        self._tag = tag
        self._app = app
        self._options = options or {}
        self._is_generator = is_generator
        self._cls = cls              # the _Cls of a method
        self._method = method
        self._params_b64 = params_b64
        self._from_name = from_name
        self._function_id: str | None = None
        self._client: _Client | None = None
        self._web_url: str | None = None
        if raw_f is not None:
            self.__name__ = getattr(raw_f, "__name__", tag)
            self.__qualname__ = getattr(raw_f, "__qualname__", tag)
            self.__doc__ = getattr(raw_f, "__doc__", None)
            self.__module__ = getattr(raw_f, "__module__", None)  # type: ignore[assignment]

    # ---- identity ----------------------------------------------------------------------
    async def _resolve(self) -> tuple[_Client, str]:
        if self._cls is not None:
            client, fid = await self._cls._resolve()
            self._is_generator = self._method in self._cls._generators
            return client, fid
        if self._function_id is None and self._from_name is not None:
            self._client, info = await lookup(*self._from_name)
            self._function_id = info["function_id"]
            self._web_url = full_url(self._client, info.get("web_url"))
            self._is_generator = self._tag in info.get("generators", [])
        if self._function_id is None:
            raise E.InvalidRequestError(
                f"function {self._tag!r} is not running: call it inside `with app.run():` (or "
                "from `sbx run`), or deploy the app (`sbx deploy`) and use "
                "Function.from_name(app_name, name)")
        return self._client or default_client(), self._function_id

    @property
    def object_id(self) -> str:
        if self._cls is not None:
            return self._cls.object_id
        if self._function_id is None:
            raise E.InvalidRequestError(f"function {self._tag!r} has no id until its app runs "
                                        "or it is looked up")
        return self._function_id

    @property
    def web_url(self) -> str | None:
        """The URL of a web endpoint (`@modal.fastapi_endpoint`, `asgi_app`, ...) while its
        app runs or once it is looked up; None for other functions."""
        return self._web_url

    async def get_web_url(self) -> str | None:
        if self._cls is not None:  # a class's web method
            await self._cls._resolve()
            return self._cls._web_url
        if self._from_name is not None and self._function_id is None:
            await self._resolve()
        return self._web_url

    def get_raw_f(self) -> Callable:
        if self._raw_f is None:
            raise E.InvalidRequestError("a function looked up by name has no local code")
        return self._raw_f

    # ---- calls -------------------------------------------------------------------------
    def _check_not_gen(self, what: str) -> None:
        if self._is_generator:
            raise E.InvalidRequestError(f"{self._tag} is a generator: use .remote_gen() "
                                        f"instead of .{what}()")

    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        client, fid = await self._resolve()
        self._check_not_gen("remote")
        call_id = await inv.create_call(client, fid, [inv.encode_args(args, kwargs)],
                                        method=self._method, params_b64=self._params_b64, overrides=self._overrides)
        try:
            async for out in inv.outputs(client, call_id):
                if out["status"] != "item":
                    return inv.decode(out)
        except BaseException:
            await inv.cancel(client, call_id)
            raise
        raise E.ExecutionError(f"call {call_id} ended without a result")

    async def remote_gen(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        client, fid = await self._resolve()
        if not self._is_generator:
            raise E.InvalidRequestError(f"{self._tag} is not a generator: use .remote()")
        call_id = await inv.create_call(client, fid, [inv.encode_args(args, kwargs)],
                                        method=self._method, params_b64=self._params_b64,
                                        kind="gen", overrides=self._overrides)
        done = False
        try:
            async for out in inv.outputs(client, call_id):
                if out["status"] == "item":
                    yield inv.decode(out)
                else:
                    inv.decode(out)  # raises on failure
            done = True
        finally:
            if not done:
                await inv.cancel(client, call_id)

    async def spawn(self, *args: Any, **kwargs: Any) -> "_FunctionCall":
        client, fid = await self._resolve()
        self._check_not_gen("spawn")
        call_id = await inv.create_call(client, fid, [inv.encode_args(args, kwargs)],
                                        method=self._method, params_b64=self._params_b64,
                                        kind="spawn", overrides=self._overrides)
        return _FunctionCall(call_id, client)

    async def map(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
                  order_outputs: bool = True, return_exceptions: bool = False,
                  wrap_returned_exceptions: bool = True) -> AsyncIterator[Any]:
        if not iterables:
            raise E.InvalidRequestError("map() needs at least one iterable")
        kw = kwargs or {}
        async for value in self._map("map", (inv.encode_args(a, kw) for a in zip(*iterables)),
                                     order_outputs, return_exceptions):
            yield value

    async def starmap(self, input_iterator: Iterable[Iterable[Any]], *,
                      kwargs: dict[str, Any] | None = None, order_outputs: bool = True,
                      return_exceptions: bool = False,
                      wrap_returned_exceptions: bool = True) -> AsyncIterator[Any]:
        kw = kwargs or {}
        async for value in self._map("starmap", (inv.encode_args(tuple(a), kw)
                                                 for a in input_iterator),
                                     order_outputs, return_exceptions):
            yield value

    async def _map(self, what: str, encoded: Iterable[str], order_outputs: bool,
                   return_exceptions: bool) -> AsyncIterator[Any]:
        client, fid = await self._resolve()
        self._check_not_gen(what)
        async for value in inv.run_map(client, fid, encoded, method=self._method,
                                       params_b64=self._params_b64,
                                       order_outputs=order_outputs,
                                       return_exceptions=return_exceptions,
                                       overrides=self._overrides):
            yield value

    async def for_each(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
                       ignore_exceptions: bool = False) -> None:
        async for _ in self.map(*iterables, kwargs=kwargs, order_outputs=False,
                                return_exceptions=ignore_exceptions):
            pass

    async def spawn_map(self, *iterables: Iterable[Any],
                        kwargs: dict[str, Any] | None = None) -> "_FunctionCall":
        client, fid = await self._resolve()
        self._check_not_gen("spawn_map")
        kw = kwargs or {}
        encoded = [inv.encode_args(args, kw) for args in zip(*iterables)]
        first, rest = encoded[:1000], encoded[1000:]
        call_id = await inv.create_call(client, fid, first, method=self._method,
                                        params_b64=self._params_b64, kind="map",
                                        closed=not rest, overrides=self._overrides)
        if rest:
            await inv.feed(client, call_id, rest)
        return _FunctionCall(call_id, client)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        if self._cls is not None:
            return self._cls._local_call(self._method, self._params_b64, args, kwargs)
        return self.get_raw_f()(*args, **kwargs)

    async def get_current_stats(self) -> dict[str, int]:
        client, fid = await self._resolve()
        info = await client.request("GET", f"/v1/functions/{fid}")
        return {"backlog": info["queued"], "num_total_runners": info["containers"]}

    async def hydrate(self) -> "_Function":
        await self._resolve()
        return self

    @classmethod
    def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None,
                  **_: Any) -> "_Function":
        if "." in name:
            raise E.InvalidRequestError(f"{name!r} names a class method: use "
                                        "Cls.from_name(app_name, 'Class')().method")
        return cls(None, name, from_name=(app_name, name))

    def __repr__(self) -> str:
        return f"Function({self._tag!r})"


def full_url(client: _Client, url: str | None) -> str | None:
    """A web endpoint's URL as the server gave it: absolute (a web domain is set), or a
    path on the server this client talks to."""
    if not url:
        return None
    return url if "://" in url else client.url.rstrip("/") + url


class _FunctionCall:
    def __init__(self, call_id: str, client: _Client | None = None):
        self._call_id = call_id
        self._client = client

    @property
    def object_id(self) -> str:
        return self._call_id

    def _c(self) -> _Client:
        return self._client or default_client()

    async def get(self, timeout: float | None = None) -> Any:
        """The result; raises TimeoutError (SandboxTimeoutError) when it is not ready
        within `timeout` seconds (0: only look), and the function's exception if it raised."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        last = None
        async for out in inv.outputs(self._c(), self._call_id, deadline=deadline):
            if out["status"] != "item":
                last = out
                if out.get("index", 0) == 0:
                    return inv.decode(out)
        if last is not None:
            return inv.decode(last)
        raise E.OutputExpiredError(f"call {self._call_id} has no output")

    async def cancel(self, terminate_containers: bool = False) -> None:
        await self._c().request("POST", f"/v1/calls/{self._call_id}/cancel",
                                params={"terminate_containers": terminate_containers})

    async def get_call_info(self) -> dict[str, Any]:
        return await self._c().request("GET", f"/v1/calls/{self._call_id}")

    @classmethod
    def from_id(cls, function_call_id: str, client: _Client | None = None) -> "_FunctionCall":
        if not isinstance(function_call_id, str) or not function_call_id.startswith("fc-"):
            raise E.InvalidRequestError(f"{function_call_id!r} is not a function call id (fc-...)")
        return cls(function_call_id, client)

    @staticmethod
    async def gather(*calls: Any) -> list[Any]:
        import asyncio

        impls = [getattr(c, "_impl", c) for c in calls]
        return list(await asyncio.gather(*(c.get() for c in impls)))

    def __repr__(self) -> str:
        return f"FunctionCall({self._call_id!r})"


class Function(Wrapped, impl=_Function):
    """A function of an app: `.remote()`, `.map()`, `.spawn()`, ... (each with `.aio`)."""

    map = GenMethod("map")
    starmap = GenMethod("starmap")
    remote_gen = GenMethod("remote_gen")

    @classmethod
    def from_name(cls, app_name: str, name: str, **kwargs: Any) -> "Function":
        return cls._from_impl(_Function.from_name(app_name, name, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._impl.local(*args, **kwargs)

    @property
    def __wrapped__(self) -> Any:
        return self._impl._raw_f


class FunctionCall(Wrapped, impl=_FunctionCall):
    """A spawned call: `.get(timeout=)`, `.cancel()`, `.object_id`; `FunctionCall.from_id`."""

    @classmethod
    def from_id(cls, function_call_id: str, **kwargs: Any) -> "FunctionCall":
        return cls._from_impl(_FunctionCall.from_id(function_call_id))

    @staticmethod
    def gather(*calls: Any) -> list[Any]:
        from ._sync import LOOP

        return LOOP.run(_FunctionCall.gather(*calls))


async def _gather_aio(*calls: Any) -> list[Any]:
    from ._sync import LOOP

    return await LOOP.run_async(_FunctionCall.gather(*calls))


FunctionCall.gather.aio = _gather_aio  # type: ignore[attr-defined]


def is_generator(f: Callable) -> bool:
    return inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
