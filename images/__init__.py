"""Images layer: base images (debootstrap), the layer store, the layered builder, registry
pulls, and the Dockerfile parser.

Must not import the server (`sandbox_service.server`), the SDK or FastAPI. A built image is
a read-only rootfs directory shared by every sandbox started from it.

This is the package's front door: other packages import these names from `images`, never
from its private modules. Names load on first use (PEP 562), so the SDK can use the
Dockerfile parser without importing the builder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BASE_IMAGE_NAME": "_model", "BuiltImage": "_model", "ImageBuildError": "_model",
    "ImageStore": "_store",
    "BuildSettings": "_builder", "Builder": "_builder",
    "Diff": "_layers", "LayerStore": "_layers",
    "empty_config": "_steps",
    "resolve_user": "_users", "user_home": "_users",
    "Cmd": "_dockerfile", "Copy": "_dockerfile", "DockerfileError": "_dockerfile",
    "Entrypoint": "_dockerfile", "Env": "_dockerfile", "From": "_dockerfile",
    "Run": "_dockerfile", "User": "_dockerfile", "Workdir": "_dockerfile",
    "parse_dockerfile": "_dockerfile",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ._builder import Builder, BuildSettings
    from ._dockerfile import (
        Cmd,
        Copy,
        DockerfileError,
        Entrypoint,
        Env,
        From,
        Run,
        User,
        Workdir,
        parse_dockerfile,
    )
    from ._layers import Diff, LayerStore
    from ._model import BASE_IMAGE_NAME, BuiltImage, ImageBuildError
    from ._steps import empty_config
    from ._store import ImageStore
    from ._users import resolve_user, user_home


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'images' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
