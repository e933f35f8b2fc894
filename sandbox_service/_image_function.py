"""`Image.run_function` as a build step (public layer): the function's module goes to the
build container (mounted for the step only, with the SDK), the function runs there once,
and what it writes becomes the image's next layer.

The layer's key is the function's own source (`inspect.getsource`), its module and name,
its arguments, its secrets and the image before it, as in Modal: editing another part of
the file does not rerun a model download. `force_build=True` reruns it.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import os
import sys
import warnings
from typing import Any, Sequence

from ._local_files import DEFAULT_PY_IGNORE, LocalAdd
from .wire import errors as E

MAX_ARGS_BYTES = 768 << 10


def function_step(raw_f: Any, *, args: Sequence[Any], kwargs: dict[str, Any] | None,
                  volumes: Any, network_file_systems: Any, gpu: Any, timeout: float | None,
                  force_build: bool) -> dict[str, Any]:
    """The `function` step (without its secrets) for `Image.run_function(raw_f, ...)`."""
    from ._app_deploy import check_global, module_of

    f = getattr(raw_f, "_sbx_raw_f", raw_f)  # a decorated @app.function: its own function
    if inspect.isclass(f) or not callable(f):
        raise E.InvalidRequestError(
            f"run_function takes a plain function, not {type(raw_f).__name__}: define a "
            "module-level `def` that prepares the image and pass it")
    if volumes or network_file_systems:
        raise E.InvalidRequestError(
            "run_function(volumes=...) is not supported: image builds mount no volume; "
            "download into the image (the default), or into a volume from a function "
            "with volumes={...}")
    if gpu:
        warnings.warn(f"run_function(gpu={gpu!r}): image builds here run without a GPU; "
                      "the function runs on CPU", stacklevel=3)
    check_global(f, False, "run_function's function")
    if getattr(sys.modules.get(getattr(f, "__module__", "") or ""), "__file__", None) is None:
        raise E.InvalidRequestError(
            f"run_function: {getattr(f, '__qualname__', f)!r} is not defined in a module file, "
            "so the build cannot import it: define it at module level in your app's file")
    modname, file, pkg = module_of(f)
    local = file or pkg
    assert local is not None
    add = LocalAdd(local, "/" + os.path.basename(local), None if file else DEFAULT_PY_IGNORE)
    try:
        source = inspect.getsource(f).encode()
    except (OSError, TypeError):  # no source to read: the whole file keys the step
        with open(file or os.path.join(local, "__init__.py"), "rb") as fh:
            source = fh.read()
    digest = hashlib.sha256(source).hexdigest()
    return {"kind": "function", "module": modname, "qualname": f.__qualname__,
            "source_sha256": digest, "args_b64": _pickled_args(args, kwargs),
            "adds": [add], "timeout_s": float(timeout) if timeout else None,
            "force_build": force_build}


def _pickled_args(args: Sequence[Any], kwargs: dict[str, Any] | None) -> str:
    if not args and not kwargs:
        return ""
    from . import _serialization as S

    data = S.dumps((tuple(args), dict(kwargs or {})))
    if len(data) > MAX_ARGS_BYTES:
        raise E.InvalidRequestError(
            f"run_function's arguments pickle to {len(data)} bytes; the limit is "
            f"{MAX_ARGS_BYTES}: pass small values (names, URLs) and load the rest inside")
    return base64.b64encode(data).decode()
