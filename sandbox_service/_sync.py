"""Sync API as a thin wrapper over the one async implementation (public layer).

All SDK I/O runs on one private event loop in a daemon thread. A sync call submits the
coroutine there and blocks; `.aio(...)` submits it there and awaits the result from the
caller's own loop, so async users share the same code path and objects never cross loops.
Wrappers are generic: `Wrapped` forwards attribute access to the async implementation and
turns coroutine methods into `Method` objects (callable, plus `.aio`). Stdlib only.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable, Coroutine

_WRAPPERS: dict[type, type] = {}


class _LoopThread:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                ready = threading.Event()
                holder: dict[str, asyncio.AbstractEventLoop] = {}

                def run() -> None:
                    loop = asyncio.new_event_loop()
                    holder["loop"] = loop
                    asyncio.set_event_loop(loop)
                    ready.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="sbx-sdk-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = holder["loop"]
            return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coro: Coroutine) -> Any:
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("blocking sandbox_service call from inside the SDK's own loop: "
                               "use the .aio variant")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:  # Ctrl-C while waiting: the operation stops too
            fut.cancel()
            raise

    async def run_async(self, coro: Coroutine) -> Any:
        if self.in_loop_thread():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


LOOP = _LoopThread()


def wrap(value: Any) -> Any:
    """Wrap an async implementation object in its registered sync class (recursively for lists)."""
    cls = _WRAPPERS.get(type(value))
    if cls is not None:
        return cls._from_impl(value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


class Method:
    """A coroutine function exposed both ways: `m(...)` blocks, `await m.aio(...)` does not."""

    def __init__(self, fn: Callable[..., Coroutine], name: str = ""):
        self._fn = fn
        self.__name__ = name or getattr(fn, "__name__", "method")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return wrap(LOOP.run(self._fn(*args, **kwargs)))

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return wrap(await LOOP.run_async(self._fn(*args, **kwargs)))


class classmethod_both:
    """Descriptor for async classmethods of the implementation, exposed sync + `.aio`."""

    def __init__(self, impl_name: str):
        self.impl_name = impl_name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type) -> Method:
        fn = getattr(owner._impl_cls, self.impl_name)
        return Method(fn, self.name)


class Wrapped:
    """Base of every sync class: holds `_impl` and forwards to it."""

    _impl_cls: type = object

    def __init_subclass__(cls, impl: type | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if impl is not None:
            cls._impl_cls = impl
            _WRAPPERS[impl] = cls

    @classmethod
    def _from_impl(cls, impl: Any) -> Any:
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_impl", impl)
        return obj

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(object.__getattribute__(self, "_impl"), name)
        if inspect.iscoroutinefunction(value):
            return Method(value, name)
        return wrap(value)

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_impl")).replace("_Async", "")

    # iteration: sync `for x in obj` and async `async for x in obj` over the impl's __aiter__
    def __iter__(self):
        it = self._impl.__aiter__()
        while True:
            try:
                yield wrap(LOOP.run(it.__anext__()))
            except StopAsyncIteration:
                return

    def __aiter__(self):
        return _AsyncIterProxy(self._impl.__aiter__())


class _AsyncIterProxy:
    def __init__(self, it: Any):
        self._it = it

    def __aiter__(self):
        return self

    async def __anext__(self) -> Any:
        return wrap(await LOOP.run_async(self._it.__anext__()))


class _GenCall:
    """An async generator method exposed both ways: `for x in obj.m(...)` drives it on the
    SDK loop; `async for x in obj.m.aio(...)` does the same from the caller's loop."""

    def __init__(self, impl: Any, name: str):
        self._impl, self._name = impl, name

    def _agen(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._impl, self._name)(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        agen = self._agen(*args, **kwargs)

        def it():
            try:
                while True:
                    try:
                        yield wrap(LOOP.run(agen.__anext__()))
                    except StopAsyncIteration:
                        return
            finally:
                try:  # the step in flight (if Ctrl-C stopped it) ends before the close
                    LOOP.run(_close_when_idle(agen))
                except (RuntimeError, StopAsyncIteration):
                    pass
        return it()

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        return _AsyncGenProxy(self._agen(*args, **kwargs))


async def _close_when_idle(agen: Any) -> None:
    for _ in range(100):
        if not getattr(agen, "ag_running", False):
            break
        await asyncio.sleep(0.01)
    await agen.aclose()


class _AsyncGenProxy(_AsyncIterProxy):
    async def aclose(self) -> None:
        await LOOP.run_async(self._it.aclose())


class GenMethod:
    """Descriptor: the implementation's async generator method `name`, sync and `.aio`."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        return _GenCall(object.__getattribute__(obj, "_impl"), self.name)
