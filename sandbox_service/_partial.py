"""Modal's small decorators (public layer): `method`, `enter`, `exit`, `concurrent`,
`batched`, `parameter`.

They only mark the user's function (a `PartialFunction` holding it and its flags) or class;
`@app.function` and `@app.cls` read the marks. Stdlib only.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .wire import errors as E

_UNSET: Any = object()


class PartialFunction:
    """A function marked by one or more of these decorators."""

    def __init__(self, raw_f: Callable, flags: set[str], params: dict[str, Any] | None = None):
        if isinstance(raw_f, PartialFunction):  # stacked: merge the marks
            flags = flags | raw_f.flags
            params = {**raw_f.params, **(params or {})}
            raw_f = raw_f.raw_f
        if not callable(raw_f):
            raise E.InvalidRequestError(f"{sorted(flags)} decorates a function, not "
                                        f"{type(raw_f).__name__}")
        self.raw_f = raw_f
        self.flags = set(flags)
        self.params = dict(params or {})
        self.__name__ = getattr(raw_f, "__name__", "function")
        self.__qualname__ = getattr(raw_f, "__qualname__", self.__name__)
        self.__doc__ = getattr(raw_f, "__doc__", None)
        self.__module__ = getattr(raw_f, "__module__", None)  # type: ignore[assignment]

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        bound = self.raw_f.__get__(obj, owner)
        return _LocalMethod(bound)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"PartialFunction({self.__qualname__}, {sorted(self.flags)})"


class _LocalMethod:
    """A marked method on an instance inside the container: callable, and `.local()`."""

    def __init__(self, bound: Callable):
        self._bound = bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._bound(*args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return self._bound(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("remote", "map", "spawn", "remote_gen", "starmap", "for_each"):
            raise E.InvalidRequestError(
                f"self.<method>.{name}() inside the container calls the same instance: call "
                "it directly (self.method(...)), or use Cls.from_name(...)().method."
                f"{name}() for another container")
        return getattr(self._bound, name)


def method(_warn_parentheses: Any = None, *, is_generator: bool | None = None) -> Callable:
    """`@modal.method()`: a method of an `@app.cls` callable with `.remote()`."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.method() with parentheses")

    def wrap(f: Callable) -> PartialFunction:
        gen = is_generator if is_generator is not None else _is_generator(_raw(f))
        return PartialFunction(f, {"method"}, {"is_generator": gen})
    return wrap


def enter(_warn_parentheses: Any = None, *, snap: bool = False) -> Callable:
    """`@modal.enter()`: runs once when a container of the class starts."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.enter() with parentheses")
    return lambda f: PartialFunction(f, {"enter"}, {"snap": snap})


def exit(_warn_parentheses: Any = None) -> Callable:  # noqa: A001 (Modal's name)
    """`@modal.exit()`: runs once when a container of the class stops (scale-down)."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.exit() with parentheses")
    return lambda f: PartialFunction(f, {"exit"})


def concurrent(_warn_parentheses: Any = None, *, max_inputs: int,
               target_inputs: int | None = None) -> Callable:
    """`@modal.concurrent(max_inputs=, target_inputs=)`: inputs one container serves at once."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.concurrent(max_inputs=N)")
    if not isinstance(max_inputs, int) or max_inputs < 1:
        raise E.InvalidRequestError("max_inputs must be an int >= 1")
    if target_inputs is not None and not 1 <= target_inputs <= max_inputs:
        raise E.InvalidRequestError("target_inputs must be between 1 and max_inputs")
    params = {"max_inputs": max_inputs, "target_inputs": target_inputs}

    def wrap(obj: Any) -> Any:
        if inspect.isclass(obj):
            obj.__sbx_concurrent__ = params
            return obj
        return PartialFunction(obj, {"concurrent"}, params)
    return wrap


def batched(_warn_parentheses: Any = None, *, max_batch_size: int, wait_ms: int) -> Callable:
    """`@modal.batched(max_batch_size=, wait_ms=)`: the function gets lists of inputs."""
    if _warn_parentheses is not None:
        raise E.InvalidRequestError("write @modal.batched(max_batch_size=N, wait_ms=M)")
    if not isinstance(max_batch_size, int) or not 1 <= max_batch_size <= 1000:
        raise E.InvalidRequestError("max_batch_size must be an int from 1 to 1000")
    if not isinstance(wait_ms, int) or not 0 <= wait_ms < 10 * 60 * 1000:
        raise E.InvalidRequestError("wait_ms must be an int from 0 to 600000")
    return lambda f: PartialFunction(f, {"batched", "method"},
                                     {"batch_max_size": max_batch_size, "batch_wait_ms": wait_ms})


class _Parameter:
    def __init__(self, default: Any, init: bool):
        self.default = default
        self.init = init

    def __repr__(self) -> str:
        return "modal.parameter()" if self.default is _UNSET else f"modal.parameter({self.default!r})"


def parameter(*, default: Any = _UNSET, init: bool = True) -> Any:
    """`x: int = modal.parameter(default=...)`: a class parameter, set by `Cls(x=...)`.
    Each distinct set of parameters gets its own containers."""
    if default is not _UNSET and not isinstance(default, (int, str, bool, bytes, type(None))):
        raise E.InvalidRequestError("modal.parameter() defaults must be int, str, bool or bytes")
    return _Parameter(default, init)


def _raw(f: Any) -> Callable:
    return f.raw_f if isinstance(f, PartialFunction) else f


def _is_generator(f: Callable) -> bool:
    return inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
