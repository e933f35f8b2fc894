"""App (public layer): a named group that sandboxes (and later functions) belong to.

`App.lookup(name, create_if_missing=True)` as in Modal. Decorators (`@app.function`, ...)
arrive with the functions work.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ._client import _Client, default_client
from ._sync import Wrapped, classmethod_both
from .wire import errors as E


class _AsyncApp:
    def __init__(self, name: str | None = None, *, app_id: str | None = None, **_: Any):
        self.name = name
        self.app_id = app_id

    @classmethod
    async def lookup(cls, name: str, *, create_if_missing: bool = False,
                     client: _Client | None = None, **_: Any) -> "_AsyncApp":
        client = client or default_client()
        data = await client.request("POST", "/v1/apps/lookup",
                                    json_body={"name": name, "create_if_missing": create_if_missing})
        return cls(data["name"], app_id=data["app_id"])

    @staticmethod
    async def _resolve_id(app: Any, client: _Client) -> str | None:
        if app is None:
            return None
        impl = getattr(app, "_impl", app)
        if not isinstance(impl, _AsyncApp):
            raise E.InvalidRequestError(f"app= takes an App, not {type(app).__name__}")
        if impl.app_id is None:
            if not impl.name:
                raise E.InvalidRequestError("app= needs a named App: App('my-app') or "
                                            "App.lookup('my-app', create_if_missing=True)")
            impl.app_id = (await _AsyncApp.lookup(impl.name, create_if_missing=True,
                                                  client=client)).app_id
        return impl.app_id

    def __repr__(self) -> str:
        return f"_AsyncApp({self.name!r}, app_id={self.app_id!r})"


class App(Wrapped, impl=_AsyncApp):
    """A named app. `App("name")` or `App.lookup("name", create_if_missing=True)`."""

    lookup = classmethod_both("lookup")

    def __init__(self, name: str | None = None, **kwargs: Any):
        object.__setattr__(self, "_impl", _AsyncApp(name, **kwargs))


@contextlib.contextmanager
def enable_output(show_progress: bool = True) -> Iterator[None]:
    """Modal's `with modal.enable_output():`: image build logs are printed to stderr inside
    it (a sandbox's own output always streams to its readers)."""
    from ._image import _OUTPUT

    _OUTPUT["on"] += 1
    try:
        yield
    finally:
        _OUTPUT["on"] -= 1
