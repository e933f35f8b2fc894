"""App (public layer): a named group of sandboxes, functions and classes.

`App.lookup(name, create_if_missing=True)` as in Modal; `@app.function(...)`,
`@app.cls(...)`, `@app.local_entrypoint()` register code; `with app.run():` (or `sbx run`)
makes an ephemeral app whose functions stop when the block ends; `app.deploy()` (or `sbx
deploy`) makes a lasting, versioned one. Registration never touches the network: the
decorators also run inside function containers when the runner imports the module.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

from . import _app_deploy as deploy
from ._client import _Client, default_client
from ._cls import Cls, _Cls
from ._functions import Function, _Function, full_url, is_generator
from ._partial import PartialFunction
from ._schedule import schedule_spec
from ._sync import LOOP, Wrapped, classmethod_both
from .wire import errors as E

# Modal options that change nothing on one machine: accepted, documented, ignored
_IGNORED = ("region", "cloud", "nonpreemptible", "i6pn", "proxy", "enable_memory_snapshot",
            "experimental_options", "include_source", "_experimental_scheduler_placement",
            "experimental_options", "rdma")


class _AsyncApp:
    def __init__(self, name: str | None = None, *, app_id: str | None = None,
                 image: Any = None, secrets: Any = (), volumes: Any = None,
                 include_source: bool | None = None, tags: Any = None, **_: Any):
        self.name = name
        self.app_id = app_id
        self._image = image
        self._secrets = list(secrets or ())
        self._volumes = dict(volumes or {})
        self._functions: dict[str, _Function] = {}
        self._classes: dict[str, _Cls] = {}
        self._entrypoints: dict[str, Callable] = {}
        self._running = False
        self._client: _Client | None = None

    @property
    def image(self) -> Any:
        """The app's default image (`App(image=...)`), or None; `app.image = img` sets it."""
        return self._image

    @image.setter
    def image(self, value: Any) -> None:
        self._image = value

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

    # ---- registration ------------------------------------------------------------------
    def _options(self, kind: str, kw: dict[str, Any]) -> dict[str, Any]:
        for legacy, new in (("keep_warm", "min_containers"), ("concurrency_limit", "max_containers"),
                            ("container_idle_timeout", "scaledown_window")):
            if legacy in kw:
                kw.setdefault(new, kw.pop(legacy))
        for name in _IGNORED:
            kw.pop(name, None)
        if kw.get("gpu") is not None:
            deploy.check_gpu(kw["gpu"])
        unknown = set(kw) - deploy.OPTION_NAMES
        if unknown:
            raise TypeError(f"@app.{kind}() got unexpected option(s) {sorted(unknown)}")
        return kw

    def function(self, _warn_parentheses: Any = None, **kw: Any) -> Callable:
        if _warn_parentheses is not None:
            raise E.InvalidRequestError("write @app.function() with parentheses")
        serialized = bool(kw.pop("serialized", False))
        name = kw.pop("name", None)
        schedule = kw.pop("schedule", None)
        schedule_spec(schedule)  # a wrong type fails here, at the decorator
        is_gen = kw.pop("is_generator", None)
        options = self._options("function", kw)

        def wrap(f: Any) -> Function:
            flags: dict[str, Any] = {}
            if isinstance(f, PartialFunction):
                if "method" in f.flags and "batched" not in f.flags:
                    raise E.InvalidRequestError("@modal.method() belongs on methods of an "
                                                "@app.cls class, not on @app.function")
                flags = f.params
                f = f.raw_f
            if isinstance(f, (Function, _Function)):
                raise E.InvalidRequestError("this function is already decorated with "
                                            "@app.function")
            if not callable(f) or isinstance(f, type):
                raise E.InvalidRequestError("@app.function() decorates a function; use "
                                            "@app.cls() for classes")
            tag = name or f.__name__
            deploy.check_global(f, serialized, "@app.function")
            if tag in self._functions or tag in self._classes:
                raise E.InvalidRequestError(f"app already has a function named {tag!r}: "
                                            "pass name= to tell them apart")
            fn = _Function(f, tag, app=self, options={
                **options, **flags, "serialized": serialized, "schedule": schedule},
                is_generator=is_gen if is_gen is not None else is_generator(f))
            self._functions[tag] = fn
            return Function._from_impl(fn)
        return wrap

    def cls(self, _warn_parentheses: Any = None, **kw: Any) -> Callable:
        if _warn_parentheses is not None:
            raise E.InvalidRequestError("write @app.cls() with parentheses")
        serialized = bool(kw.pop("serialized", False))
        name = kw.pop("name", None)
        options = self._options("cls", kw)

        def wrap(user_cls: Any) -> Cls:
            if not isinstance(user_cls, type):
                raise E.InvalidRequestError("@app.cls() decorates a class")
            tag = name or user_cls.__name__
            deploy.check_global(user_cls, serialized, "@app.cls")
            if tag in self._functions or tag in self._classes:
                raise E.InvalidRequestError(f"app already has a function named {tag!r}")
            extra = dict(getattr(user_cls, "__sbx_concurrent__", None) or {})
            c = _Cls(user_cls, tag, app=self, options={**options, **extra,
                                                         "serialized": serialized})
            if not c._method_names and not c._web_attr:
                raise E.InvalidRequestError(f"{tag} has no @modal.method() and no web endpoint: "
                                            "mark the methods callers may call")
            self._classes[tag] = c
            return Cls._from_impl(c)
        return wrap

    def local_entrypoint(self, _warn_parentheses: Any = None, *,
                         name: str | None = None) -> Callable:
        if _warn_parentheses is not None:
            raise E.InvalidRequestError("write @app.local_entrypoint() with parentheses")

        def wrap(f: Callable) -> Callable:
            self._entrypoints[name or f.__name__] = f
            return f
        return wrap

    def include(self, other: Any) -> "_AsyncApp":
        other = getattr(other, "_impl", other)
        for tag, fn in other._functions.items():
            self._functions.setdefault(tag, fn)
        for tag, c in other._classes.items():
            self._classes.setdefault(tag, c)
        return self

    @property
    def registered_functions(self) -> dict[str, Any]:
        out: dict[str, Any] = {t: Function._from_impl(f) for t, f in self._functions.items()}
        return out

    @property
    def registered_classes(self) -> dict[str, Any]:
        return {t: Cls._from_impl(c) for t, c in self._classes.items()}

    @property
    def registered_entrypoints(self) -> dict[str, Callable]:
        return dict(self._entrypoints)

    @property
    def is_interactive(self) -> bool:
        return False

    # ---- running -----------------------------------------------------------------------
    async def _start(self, mode: str, name: str | None = None,
                     client: _Client | None = None) -> "_AsyncApp":
        client = client or default_client()
        result = await deploy.register(self, client, mode=mode, name=name or self.name)
        self.app_id = result["app_id"]
        if name:
            self.name = name
        self._client = client
        for tag, fid in result["functions"].items():
            target = self._functions.get(tag) or self._classes.get(tag)
            if target is not None:
                target._function_id, target._client = fid, client
                target._web_url = full_url(client, result.get("web_urls", {}).get(tag))
        self._running = mode == "ephemeral"
        return self

    async def _stop(self) -> None:
        if self.app_id and self._running:
            self._running = False
            with contextlib.suppress(E.SandboxError):
                await (self._client or default_client()).request(
                    "POST", f"/v1/apps/{self.app_id}/stop")
        for target in (*self._functions.values(), *self._classes.values()):
            target._function_id = None
        for target in (*self._functions.values(), *self._classes.values()):
            target._web_url = None

    async def deploy(self, *, name: str | None = None, tag: str | None = None,
                     client: _Client | None = None, **_: Any) -> "_AsyncApp":
        return await self._start("deployed", name=name, client=client)

    def run(self, *, client: _Client | None = None, detach: bool = False,
            interactive: bool = False, show_output: bool = True, **_: Any) -> "_RunContext":
        return _RunContext(self, client, show_output)

    def __repr__(self) -> str:
        return f"_AsyncApp({self.name!r}, app_id={self.app_id!r})"


class _RunContext:
    """`with app.run():` and `async with app.run():` (the functions live inside it)."""

    def __init__(self, app: _AsyncApp, client: _Client | None, show_output: bool):
        self._app, self._client, self._show = app, client, show_output
        self._logs: Any = None

    async def _enter(self) -> None:
        await self._app._start("ephemeral", client=self._client)
        if self._show:
            from ._app_logs import follow_logs

            self._logs = follow_logs(self._app)

    async def _exit(self) -> None:
        if self._logs is not None:
            await self._logs.stop()
        await self._app._stop()

    def __enter__(self) -> Any:
        LOOP.run(self._enter())
        return App._from_impl(self._app)

    def __exit__(self, *exc: Any) -> None:
        LOOP.run(self._exit())

    async def __aenter__(self) -> Any:
        await LOOP.run_async(self._enter())
        return App._from_impl(self._app)

    async def __aexit__(self, *exc: Any) -> None:
        await LOOP.run_async(self._exit())


class App(Wrapped, impl=_AsyncApp):
    """A named app. `App("name")` or `App.lookup("name", create_if_missing=True)`."""

    lookup = classmethod_both("lookup")

    def __init__(self, name: str | None = None, **kwargs: Any):
        object.__setattr__(self, "_impl", _AsyncApp(name, **kwargs))

    def function(self, _warn_parentheses: Any = None, **kw: Any) -> Callable:
        return self._impl.function(_warn_parentheses, **kw)

    def cls(self, _warn_parentheses: Any = None, **kw: Any) -> Callable:
        return self._impl.cls(_warn_parentheses, **kw)

    def local_entrypoint(self, _warn_parentheses: Any = None, **kw: Any) -> Callable:
        return self._impl.local_entrypoint(_warn_parentheses, **kw)

    def run(self, **kw: Any) -> _RunContext:
        return self._impl.run(**kw)

    def include(self, other: Any) -> "App":
        self._impl.include(other)
        return self

    @property
    def app_id(self) -> str | None:
        return self._impl.app_id

    @property
    def name(self) -> str | None:
        return self._impl.name

    @property
    def image(self) -> Any:
        """The app's default image: `with app.image.imports(): ...` as in Modal."""
        return self._impl.image

    @image.setter
    def image(self, value: Any) -> None:
        self._impl.image = value


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


# inside a function container: (function call id, input id) of the input this thread or
# task runs; set by the runner
CURRENT_INPUT: contextvars.ContextVar = contextvars.ContextVar("sbx_current_input",
                                                               default=None)


def current_input_id() -> str | None:
    """The id of the input being processed (Modal's `modal.current_input_id()`): the same
    across retries of that input; None outside a function container."""
    cur = CURRENT_INPUT.get()
    return cur[1] if cur else None


def current_function_call_id() -> str | None:
    """The id of the function call the current input belongs to (`FunctionCall.from_id`
    takes it); None outside a function container."""
    cur = CURRENT_INPUT.get()
    return cur[0] if cur else None


def is_local() -> bool:
    """False inside a function container, True everywhere else (Modal's `modal.is_local`)."""
    from ._client import in_container

    return not in_container()
