"""Web endpoint decorators (public layer): Modal's `fastapi_endpoint`, `asgi_app`,
`wsgi_app` and `web_server`, stacked under `@app.function(...)`.

    @app.function(image=modal.Image.debian_slim().pip_install("fastapi"))
    @modal.fastapi_endpoint(method="POST")
    def predict(item: dict): ...

    @app.function()
    @modal.asgi_app()
    def web():
        return my_asgi_app          # FastAPI, Starlette, any ASGI app

They only mark the function; the server serves each endpoint at a URL of its own port
(`Function.get_web_url()`; `sbx deploy` and `sbx run` print them). Requests reach warm
containers over the runner's channel (no network needed in the container), stream both
ways, and WebSockets pass through. `fastapi_endpoint` needs `fastapi` in the image (as
in Modal). Stdlib only.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ._partial import PartialFunction
from .wire import errors as E

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _label(label: str | None) -> str | None:
    if label is not None and not _LABEL.match(label):
        raise E.InvalidRequestError(f"label={label!r}: 1-63 of [a-z0-9-], not starting or "
                                    "ending with '-' (it becomes part of the URL)")
    return label


def _mark(kind: str, **web: Any) -> Callable[[Callable], PartialFunction]:
    def wrap(f: Callable) -> PartialFunction:
        if isinstance(f, PartialFunction) and "web" in f.flags:
            raise E.InvalidRequestError("a function can carry one web decorator")
        return PartialFunction(f, {"web"}, {"web": {"kind": kind, **web}})
    return wrap


def fastapi_endpoint(_warn_parentheses: Any = None, *, method: str = "GET",
                     label: str | None = None, docs: bool = False,
                     requires_proxy_auth: bool = False, custom_domains: Any = None) -> Callable:
    """The function becomes one FastAPI route at the endpoint's root: its arguments are
    query parameters (GET) or the JSON body (a `dict` or pydantic parameter)."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.fastapi_endpoint() with parentheses")
    if method.upper() not in _METHODS:
        raise E.InvalidRequestError(f"method={method!r}: one of {', '.join(_METHODS)}")
    return _mark("fastapi", method=method.upper(), label=_label(label), docs=bool(docs),
                 requires_proxy_auth=bool(requires_proxy_auth))


def web_endpoint(_warn_parentheses: Any = None, **kw: Any) -> Callable:
    """Modal's older name of `fastapi_endpoint`."""
    return fastapi_endpoint(_warn_parentheses, **kw)


def asgi_app(_warn_parentheses: Any = None, *, label: str | None = None,
             requires_proxy_auth: bool = False, custom_domains: Any = None) -> Callable:
    """The function returns an ASGI app (FastAPI, Starlette, ...); it is called once per
    container, after `@enter`, and the app serves every request."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.asgi_app() with parentheses")
    return _mark("asgi", label=_label(label), requires_proxy_auth=bool(requires_proxy_auth))


def wsgi_app(_warn_parentheses: Any = None, *, label: str | None = None,
             requires_proxy_auth: bool = False, custom_domains: Any = None) -> Callable:
    """The function returns a WSGI app (Flask, Django, ...), served on threads."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.wsgi_app() with parentheses")
    return _mark("wsgi", label=_label(label), requires_proxy_auth=bool(requires_proxy_auth))


def web_server(port: int, *, startup_timeout: float = 5.0, label: str | None = None,
               requires_proxy_auth: bool = False, custom_domains: Any = None) -> Callable:
    """The function starts a server listening on `port` inside the container (and
    returns); requests are proxied to it once it accepts connections."""
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise E.InvalidRequestError(f"web_server(port={port!r}): a TCP port, 1-65535")
    return _mark("server", port=port, startup_timeout_s=float(startup_timeout),
                 label=_label(label), requires_proxy_auth=bool(requires_proxy_auth))
