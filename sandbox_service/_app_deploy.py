"""Turning an app's registered functions into `FunctionSpec`s and registering them (public
layer): the options Modal takes, the images (with the code added as their last layer), the
secrets, and the one `POST /v1/apps/deploy`.

The code: the function's module file is added to its image at /root (a package: the whole
package directory), content-addressed like any local file, so an unchanged file is not
uploaded again and an edited one rebuilds only that last layer. `serialized=True` ships the
function or class itself by value (cloudpickle) instead.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Any

from . import _serialization as S
from ._client import _Client
from ._partial import PartialFunction
from ._schedule import schedule_spec
from ._secret import split_secrets
from .wire import errors as E

OPTION_NAMES = {
    "image", "gpu", "cpu", "memory", "ephemeral_disk", "timeout", "startup_timeout", "retries",
    "secrets", "env", "volumes", "min_containers", "max_containers", "buffer_containers",
    "scaledown_window", "single_use_containers", "block_network", "cidr_allowlist",
    "restrict_modal_access", "max_inputs", "allow_concurrent_inputs", "target_inputs",
}
CODE_ROOT = "/root"


def check_gpu(gpu: Any) -> None:
    """Modal's grammar ('H100', 'A100-80GB:2', 'any', or a list of fallbacks), checked
    before any network (wire.parse_gpus, the server's parser)."""
    from .wire import parse_gpus

    try:
        parse_gpus(gpu)
    except ValueError as e:
        raise E.InvalidRequestError(str(e)) from None


def check_global(obj: Any, serialized: bool, what: str) -> None:
    qual = getattr(obj, "__qualname__", "")
    if "<locals>" in qual and not serialized:
        raise E.InvalidRequestError(
            f"{what} {qual!r} is not defined at global scope, so its container cannot "
            "import it: define it at module level, or pass serialized=True")


def _limit(value: Any, what: str) -> Any:
    if isinstance(value, tuple):  # Modal's (request, limit): the limit is what is enforced
        if len(value) != 2:
            raise E.InvalidRequestError(f"{what}= takes a number or (request, limit)")
        return value[1]
    return value


def _retries(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "_policy"):
        raise E.InvalidRequestError("retries= takes an int or modal.Retries(...)")
    if isinstance(value, int):
        from ._functions import Retries

        value = Retries(max_retries=value, backoff_coefficient=1.0, initial_delay=1.0)
    return value._policy.model_dump()


def module_of(obj: Any) -> tuple[str, str | None, str | None]:
    """(import name in the container, local file to add, local package dir to add)."""
    modname = getattr(obj, "__module__", None) or "__main__"
    mod = sys.modules.get(modname)
    path = getattr(mod, "__file__", None)
    if not path:
        raise E.InvalidRequestError(
            f"{getattr(obj, '__qualname__', obj)!r} comes from {modname}, which has no file "
            "(an interactive session?): pass serialized=True")
    path = os.path.abspath(path)
    if modname == "__main__":
        return os.path.splitext(os.path.basename(path))[0], path, None
    parts = modname.split(".")
    if len(parts) == 1:
        return modname, path, None
    pkg_dir = os.path.dirname(path)  # the innermost package's directory
    depth = len(parts) - 1 if os.path.basename(path) == "__init__.py" else len(parts) - 2
    for _ in range(depth):
        pkg_dir = os.path.dirname(pkg_dir)
    return modname, None, pkg_dir


async def _image_for(app: Any, options: dict[str, Any], obj: Any, serialized: bool,
                     client: _Client, cache: dict[Any, str]) -> tuple[str, str | None]:
    from ._image import Image

    image = options.get("image") or app._image or Image.debian_slim()
    if not isinstance(image, Image):
        raise E.InvalidRequestError(f"image= takes an Image, not {type(image).__name__}")
    modname = None
    if not serialized:
        modname, file, pkg = module_of(obj)
        if file:
            image = image.add_local_file(file, f"{CODE_ROOT}/{os.path.basename(file)}")
        elif pkg:
            image = image.add_local_dir(pkg, f"{CODE_ROOT}/{os.path.basename(pkg)}")
    key = (id(options.get("image") or app._image), modname, getattr(obj, "__module__", None))
    if key not in cache:
        cache[key] = await image._resolve(client)
    return cache[key], modname


async def spec_of(app: Any, tag: str, obj: Any, options: dict[str, Any], client: _Client,
                  cache: dict[Any, str], *, is_class: bool, methods: list[str],
                  generators: list[str], batch: dict[str, Any]) -> dict[str, Any]:
    o = dict(options)
    serialized = bool(o.pop("serialized", False))
    image_id, modname = await _image_for(app, o, obj, serialized, client, cache)
    volumes = {**getattr(app, "_volumes", {}), **(o.get("volumes") or {})}
    if volumes:
        from ._volume import mounts_of
    env, names, _checks = split_secrets(o.get("env"), [*app._secrets, *(o.get("secrets") or ())])
    max_inputs = o.get("max_inputs") or o.get("allow_concurrent_inputs") or 1
    spec: dict[str, Any] = {
        "name": tag, "module": modname, "qualname": obj.__qualname__,
        "serialized_b64": base64.b64encode(S.dumps(obj)).decode() if serialized else None,
        "is_class": is_class, "methods": methods, "generators": generators,
        "image": image_id, "cpu": _limit(o.get("cpu"), "cpu"),
        "memory_mib": _limit(o.get("memory"), "memory"), "disk_mib": o.get("ephemeral_disk"),
        "gpu": o.get("gpu"), "timeout_s": o.get("timeout") or 300,
        "startup_timeout_s": o.get("startup_timeout"), "retries": _retries(o.get("retries")),
        "secret_names": names, "env": env, "min_containers": o.get("min_containers") or 0,
        "volumes": await mounts_of(volumes, f"@app.function {tag}") if volumes else [],
        "max_containers": o.get("max_containers"),
        "buffer_containers": o.get("buffer_containers") or 0,
        "scaledown_window_s": o.get("scaledown_window") or 60,
        "single_use_containers": bool(o.get("single_use_containers")),
        "block_network": bool(o.get("block_network")),
        "cidr_allowlist": o.get("cidr_allowlist"),
        "restrict_modal_access": bool(o.get("restrict_modal_access")),
        "max_inputs": max_inputs, "target_inputs": o.get("target_inputs"),
        "batch_max_size": batch.get("batch_max_size"),
        "batch_wait_ms": batch.get("batch_wait_ms"),
        "schedule": schedule_spec(o.get("schedule")),
        "web": o.get("web"),
    }
    return spec


async def register(app: Any, client: _Client, *, mode: str, name: str | None) -> dict[str, Any]:
    from ._client import wire_model
    from .wire import AppDeploy

    cache: dict[Any, str] = {}
    specs = []
    for tag, fn in app._functions.items():
        opts = dict(fn._options)
        batch = {k: opts.pop(k) for k in ("batch_max_size", "batch_wait_ms") if k in opts}
        opts.pop("is_generator", None)
        specs.append(await spec_of(app, tag, fn._raw_f, opts, client, cache, is_class=False,
                                   methods=[], generators=[tag] if fn._is_generator else [],
                                   batch=batch))
    for tag, c in app._classes.items():
        from ._cls import methods, web_methods

        ms = methods(c._user_cls)
        options = dict(c._options)
        web = web_methods(c._user_cls)
        if len(web) > 1:
            raise E.InvalidRequestError(
                f"{tag} has {len(web)} web endpoint methods ({', '.join(sorted(web))}): one "
                "per class for now; serve several routes from one @modal.asgi_app")
        for attr, pf in web.items():
            options["web"] = {**pf.params["web"], "attr": attr}
        batch = next((pf.params for pf in ms.values() if "batched" in pf.flags), {})
        specs.append(await spec_of(app, tag, c._user_cls, options, client, cache,
                                   is_class=True, methods=list(ms), generators=c._generators,
                                   batch=batch))
    body = wire_model(AppDeploy, name=name, mode=mode, functions=specs)
    return await client.request("POST", "/v1/apps/deploy", json_body=body.model_dump())


def partial_params(f: Any) -> dict[str, Any]:
    return f.params if isinstance(f, PartialFunction) else {}
