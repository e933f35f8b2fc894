"""The SDK as function containers see it (server layer): a read-only directory mounted at
/.sbx/sdk (the `sandbox_service` package without its server and CLI, and cloudpickle)
and one at /.sbx/sdk-deps (pydantic, httpx, ... that the SDK imports). The runner puts
the first in front of sys.path and the second at its end, so a user's image needs nothing
installed, and the versions it does install win over ours.

Built once per content (a hash of the SDK's files and the dependencies' versions) under
SBX_HOME/sdk/. The dependencies are the server's own; their one compiled module,
pydantic_core, is also added for the other Pythons whose wheels of the same version lie in
the wheel cache (`SBX_WHEEL_CACHE`, filled by scripts/fetch-sdk-wheels.sh at install), so
an image with Debian 13's python 3.13 can call the service from its functions too. Python
picks the extension built for itself (`_pydantic_core.cpython-313-...so`) from the one
package directory. Without such a wheel, only calls to the service from that image fail,
with an import error that says so.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import zipfile

SDK_PACKAGES = ("sandbox_service", "cloudpickle")
DEP_PACKAGES = ("pydantic", "pydantic_core", "annotated_types", "typing_extensions",
                "typing_inspection", "httpx", "httpcore", "h11", "anyio", "sniffio", "idna",
                "certifi", "websockets")
_SKIP_DIRS = {"__pycache__", "server", "cli"}


def _source(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return spec.origin


def _wheels(wheel_dir: str | None) -> list[str]:
    """pydantic_core wheels of the installed version for other Pythons, in `wheel_dir`."""
    try:
        version = importlib.metadata.version("pydantic-core")
    except importlib.metadata.PackageNotFoundError:
        return []
    if not wheel_dir or not os.path.isdir(wheel_dir):
        return []
    prefix = f"pydantic_core-{version}-cp3"
    return sorted(os.path.join(wheel_dir, f) for f in os.listdir(wheel_dir)
                  if f.startswith(prefix) and f.endswith(".whl") and "x86_64" in f
                  and "manylinux" in f)


def _add_extensions(wheels: list[str], deps: str) -> None:
    dest = os.path.join(deps, "pydantic_core")
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    base = os.path.basename(name)
                    if (name.startswith("pydantic_core/_pydantic_core.cpython-")
                            and name.endswith(".so")
                            and not os.path.exists(os.path.join(dest, base))):
                        with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                            shutil.copyfileobj(src, out)
        except (OSError, zipfile.BadZipFile):
            continue  # a broken download: that Python just cannot call the service


def _digest(wheels: list[str] = ()) -> str:
    h = hashlib.sha256()
    root = _source("sandbox_service")
    assert root is not None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for f in sorted(filenames):
            if f.endswith(".py"):
                h.update(f.encode())
                with open(os.path.join(dirpath, f), "rb") as fh:
                    h.update(fh.read())
    h.update(b"compiled-1")
    for wheel in wheels:
        h.update(os.path.basename(wheel).encode())
    for name in SDK_PACKAGES[1:] + DEP_PACKAGES:
        try:
            h.update(f"{name}={importlib.metadata.version(name.replace('_', '-'))}".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{name}={_source(name)}".encode())
    return h.hexdigest()[:16]


def _copy(name: str, dest: str) -> None:
    src = _source(name)
    if src is None:
        return
    if os.path.isdir(src):
        shutil.copytree(src, os.path.join(dest, os.path.basename(src)),
                        ignore=lambda d, names: [n for n in names if n in _SKIP_DIRS
                                                 and os.path.basename(d) == "sandbox_service"
                                                 or n == "__pycache__"])
    else:
        shutil.copy2(src, os.path.join(dest, os.path.basename(src)))


def build_sdk_mount(home: str, wheel_dir: str | None = None) -> tuple[str, str]:
    """(sdk dir, deps dir) for this server's SDK, built if missing."""
    base = os.path.join(home, "sdk")
    wheels = _wheels(wheel_dir)
    final = os.path.join(base, _digest(wheels))
    sdk, deps = os.path.join(final, "sdk"), os.path.join(final, "deps")
    if os.path.isdir(final):
        return sdk, deps
    os.makedirs(base, mode=0o755, exist_ok=True)
    tmp = final + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "sdk"))
    os.makedirs(os.path.join(tmp, "deps"))
    for name in SDK_PACKAGES:
        _copy(name, os.path.join(tmp, "sdk"))
    for name in DEP_PACKAGES:
        _copy(name, os.path.join(tmp, "deps"))
    _add_extensions(wheels, os.path.join(tmp, "deps"))
    # bytecode now: the mount is read-only, and compiling ~300 modules at every container
    # start under gVisor costs about a second (used when the image's python is the server's)
    compileall.compile_dir(tmp, quiet=2, workers=1)
    for dirpath, dirnames, filenames in os.walk(tmp):  # readable by any user in the container
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644 if not f.endswith(".so") else 0o755)
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, final)
    except OSError:  # another server built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    for old in os.listdir(base):  # earlier versions
        if old != os.path.basename(final) and not old.endswith(f".tmp{os.getpid()}"):
            shutil.rmtree(os.path.join(base, old), ignore_errors=True)
    return sdk, deps
