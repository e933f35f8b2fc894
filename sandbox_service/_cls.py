"""Cls and Obj (public layer): what `@app.cls` gives back, and the helpers the function
runner uses to build an instance of the user's class.

`Model = app.cls(...)(UserClass)`; `Model(size=3)` is an `Obj` whose `@modal.method()`s are
`Function`s bound to those parameters (`Model(size=3).predict.remote(x)`). One server
function serves the class; each distinct set of parameters gets its own containers.
"""

from __future__ import annotations

import base64
import inspect
from typing import Any, Callable

from . import _serialization as S
from ._client import _Client, default_client
from ._functions import Function, _Function, full_url, lookup
from ._partial import _UNSET, PartialFunction, _Parameter
from ._sync import Wrapped
from .wire import errors as E

_OPTION_NAMES = {"cpu", "memory", "gpu", "timeout", "retries", "secrets", "env",
                 "min_containers", "max_containers", "buffer_containers", "scaledown_window"}


def _to_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """Modal's option names -> FunctionSpec fields (wire.CallCreate.overrides)."""
    from ._app_deploy import _limit, _retries, check_gpu
    from ._secret import split_secrets

    out: dict[str, Any] = {}
    names = {"timeout": "timeout_s", "scaledown_window": "scaledown_window_s"}
    for k, v in options.items():
        if k == "cpu":
            out["cpu"] = _limit(v, "cpu")
        elif k == "memory":
            out["memory_mib"] = _limit(v, "memory")
        elif k == "gpu":
            if v is not None:
                check_gpu(v)
            out["gpu"] = v
        elif k == "retries":
            out["retries"] = _retries(v)
        elif k in ("secrets", "env"):
            env, secret_names, _ = split_secrets(options.get("env"), options.get("secrets"))
            out["env"] = env
            out["secret_names"] = secret_names
        else:
            out[names.get(k, k)] = v
    return out


# ---- the user's class: used by the SDK (.local) and by the runner in the container -------
def parameters(cls: type) -> dict[str, _Parameter]:
    out: dict[str, _Parameter] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, _Parameter):
                out[name] = value
    return out


def construct_instance(cls: type, params: dict[str, Any]) -> Any:
    """An instance of the user's class with its `modal.parameter()`s set (no user
    __init__ beyond the class's own, as Modal)."""
    declared = parameters(cls)
    unknown = set(params) - set(declared)
    if unknown and declared:
        raise TypeError(f"{cls.__name__} has no parameter(s) {sorted(unknown)}; its "
                        f"parameters are {sorted(declared)}")
    if not declared:
        obj = cls(**params) if params else cls()
        return obj
    obj = cls.__new__(cls)
    for name, p in declared.items():
        if name in params:
            value = params[name]
        elif p.default is not _UNSET:
            value = p.default
        else:
            raise TypeError(f"{cls.__name__}() is missing its parameter {name!r}")
        object.__setattr__(obj, name, value)
    if cls.__init__ is not object.__init__:
        obj.__init__()
    return obj


def lifecycle_methods(cls: type, kind: str) -> list[Callable]:
    seen: set[str] = set()
    out = []
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            if isinstance(value, PartialFunction) and kind in value.flags:
                out.append(value.raw_f)
    return out


def raw_method(cls: type, name: str) -> Callable:
    value = inspect.getattr_static(cls, name, None)
    if isinstance(value, PartialFunction) and "method" in value.flags:
        return value.raw_f
    raise AttributeError(f"{cls.__name__}.{name} is not a @modal.method()")


def _marked(cls: type, flag: str) -> dict[str, PartialFunction]:
    out: dict[str, PartialFunction] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, PartialFunction) and flag in value.flags:
                out[name] = value
    return out


def methods(cls: type) -> dict[str, PartialFunction]:
    """The class's `@modal.method()`s."""
    return _marked(cls, "method")


def web_methods(cls: type) -> dict[str, PartialFunction]:
    """The class's methods marked with a web decorator (`@modal.asgi_app()`, ...)."""
    return _marked(cls, "web")


# ---- the SDK objects -------------------------------------------------------------------------
class _Cls:
    def __init__(self, user_cls: type | None, tag: str, *, app: Any = None,
                 options: dict[str, Any] | None = None,
                 from_name: tuple[str, str] | None = None):
        self._user_cls = user_cls
        self._sbx_user_cls = user_cls
        self._tag = tag
        self._app = app
        self._options = options or {}
        self._from_name = from_name
        self._function_id: str | None = None
        self._client: _Client | None = None
        self._method_names: list[str] = list(methods(user_cls)) if user_cls else []
        self._generators: list[str] = [n for n, pf in methods(user_cls).items()
                                       if pf.params.get("is_generator")] if user_cls else []
        self._overrides: dict[str, Any] = {}
        self._parent: _Cls | None = None   # with_options: the class it came from
        self._locals: dict[str | None, Any] = {}
        self._web_attr: str | None = next(iter(web_methods(user_cls)), None) if user_cls else None
        self._web_url: str | None = None

    async def _resolve(self) -> tuple[_Client, str]:
        if self._parent is not None:
            client, fid = await self._parent._resolve()
            self._method_names, self._generators = (self._parent._method_names,
                                                    self._parent._generators)
            return client, fid
        if self._function_id is None and self._from_name is not None:
            app_name, name = self._from_name
            client, info = await lookup(app_name, name)
            if not info["is_class"]:
                raise E.InvalidRequestError(f"{name!r} in app {app_name!r} is a function: "
                                            "use Function.from_name")
            self._function_id, self._client = info["function_id"], client
            self._method_names, self._generators = info["methods"], info["generators"]
            self._web_url = full_url(client, info.get("web_url"))
        if self._function_id is None:
            raise E.InvalidRequestError(
                f"class {self._tag!r} is not running: use it inside `with app.run():` (or "
                "from `sbx run`), or deploy the app and use Cls.from_name(app_name, name)")
        return self._client or default_client(), self._function_id

    @property
    def object_id(self) -> str:
        if self._function_id is None:
            raise E.InvalidRequestError(f"class {self._tag!r} has no id until its app runs "
                                        "or it is looked up")
        return self._function_id

    def _bind(self, params: dict[str, Any]) -> "_Obj":
        if self._user_cls is not None:
            declared = parameters(self._user_cls)
            unknown = set(params) - set(declared)
            if unknown:
                raise TypeError(f"{self._tag} has no parameter(s) {sorted(unknown)}"
                                + (f"; its parameters are {sorted(declared)}" if declared
                                   else ": declare them with x: int = modal.parameter()"))
        blob = base64.b64encode(S.dumps(dict(params))).decode() if params else None
        return _Obj(self, params, blob)

    def _local_call(self, method: str | None, params_b64: str | None, args: tuple,
                    kwargs: dict) -> Any:
        if self._user_cls is None:
            raise E.InvalidRequestError("a class looked up by name has no local code")
        obj = self._locals.get(params_b64)
        if obj is None:
            params = S.loads(base64.b64decode(params_b64)) if params_b64 else {}
            obj = construct_instance(self._user_cls, params)
            for fn in lifecycle_methods(self._user_cls, "enter"):
                fn(obj)
            self._locals[params_b64] = obj
        return raw_method(self._user_cls, method or "").__get__(obj)(*args, **kwargs)

    def _with(self, overrides: dict[str, Any]) -> "_Cls":
        c = _Cls.__new__(_Cls)
        c.__dict__.update(self.__dict__)
        c._overrides = {**self._overrides, **overrides}
        c._parent = self
        return c

    def with_options(self, **options: Any) -> "_Cls":
        """Other resources or scaling for calls through the returned class (Modal's names:
        cpu, memory, gpu, timeout, retries, secrets, env, min/max/buffer_containers,
        scaledown_window); each distinct set of options gets its own containers."""
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise E.InvalidRequestError(f"with_options() does not take {sorted(unknown)}; it "
                                        f"takes {sorted(_OPTION_NAMES)}")
        return self._with(_to_overrides(options))

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> "_Cls":
        return self._with({"max_inputs": max_inputs, "target_inputs": target_inputs})

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> "_Cls":
        return self._with({"batch_max_size": max_batch_size, "batch_wait_ms": wait_ms})

    @classmethod
    def from_name(cls, app_name: str, name: str, **_: Any) -> "_Cls":
        return cls(None, name, from_name=(app_name, name))

    async def hydrate(self) -> "_Cls":
        await self._resolve()
        return self

    def __repr__(self) -> str:
        return f"Cls({self._tag!r})"


class _Obj:
    def __init__(self, cls: _Cls, params: dict[str, Any], params_b64: str | None):
        self._cls = cls
        self._params = params
        self._params_b64 = params_b64

    def _method(self, name: str) -> _Function:
        cls = self._cls
        if name == cls._web_attr:  # a web endpoint: `.get_web_url()`, not `.remote()`
            return _Function(None, f"{cls._tag}.{name}", app=cls._app, cls=cls, method=name)
        if cls._user_cls is not None and name not in cls._method_names:
            raise AttributeError(f"{cls._tag}.{name} is not a @modal.method() of the class")
        user = cls._user_cls
        raw = raw_method(user, name) if user is not None else None
        fn = _Function(raw, f"{cls._tag}.{name}", app=cls._app, cls=cls, method=name,
                       params_b64=self._params_b64,
                       is_generator=name in cls._generators,
                       overrides=dict(cls._overrides) or None)
        return fn

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._params:
            return self._params[name]
        return self._method(name)

    def __repr__(self) -> str:
        return f"Obj({self._cls._tag!r}, {self._params!r})"


class Cls(Wrapped, impl=_Cls):
    """A class of an app: `Model(param=...).method.remote(...)`; `Cls.from_name(app, name)`."""

    @classmethod
    def from_name(cls, app_name: str, name: str, **kwargs: Any) -> "Cls":
        return cls._from_impl(_Cls.from_name(app_name, name, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> "Obj":
        if args:
            raise TypeError(f"{self._impl._tag}() takes keyword parameters only "
                            "(declared with modal.parameter())")
        return Obj._from_impl(self._impl._bind(kwargs))

    def with_options(self, **options: Any) -> "Cls":
        return Cls._from_impl(self._impl.with_options(**options))

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> "Cls":
        return Cls._from_impl(self._impl.with_concurrency(max_inputs=max_inputs,
                                                          target_inputs=target_inputs))

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> "Cls":
        return Cls._from_impl(self._impl.with_batching(max_batch_size=max_batch_size,
                                                       wait_ms=wait_ms))


class Obj(Wrapped, impl=_Obj):
    """An instance of a remote class: its methods are Functions."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = object.__getattribute__(self, "_impl").__getattr__(name)
        return Function._from_impl(value) if isinstance(value, _Function) else value
