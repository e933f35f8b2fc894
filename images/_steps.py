"""Build steps as data: cache keys, image config, and the shell each package step runs
(images layer).

Steps arrive as plain dicts (the server validated them against the wire models); this
module turns them into layer keys and commands and folds the image config (env, workdir,
entrypoint, cmd, user). Pure: no I/O. Must not import the server or `sandbox_service`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import shlex
from typing import Any

from ._model import ImageBuildError, canonical_json

# Debian suites whose python3 is the version asked for (what this machine's mirror serves).
SUITE_FOR_PYTHON = {"3.11": "bookworm", "3.13": "trixie"}
DEFAULT_PYTHON = "3.11"
SOURCE_KINDS = ("debian_slim", "registry", "image")
CONFIG_KINDS = ("env", "entrypoint", "cmd", "user")
# Values of these never enter a cache key or a log line.
SECRET_FIELDS = ("secret_env",)
# A function step's source files and the server's SDK mount: present while it runs, not
# part of its key (its `source_sha256` is).
UNKEYED_FUNCTION_FIELDS = ("entries", "sdk_dirs")
# Runs inside the build container: import the user's module (its source mounted at
# /.sbx/src, the SDK at /.sbx/sdk) and call the function with the pickled arguments.
FUNCTION_BOOT = """\
import asyncio, importlib, inspect, os, pickle, sys
sys.path[:0] = ["/.sbx/src", "/.sbx/sdk"]
sys.path.append("/.sbx/sdk-deps")
os.environ.update(SBX_IMAGE_BUILD="1")  # the SDK: images are only defined here
obj = importlib.import_module(sys.argv[1])
for part in sys.argv[2].split("."):
    obj = getattr(obj, part)
obj = getattr(obj, "_sbx_raw_f", obj)
with open("/.sbx/src/.sbx-args", "rb") as f:
    args, kwargs = pickle.load(f)
result = obj(*args, **kwargs)
if inspect.iscoroutine(result):
    asyncio.run(result)
"""

PIP_ENV = {"PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_ROOT_USER_ACTION": "ignore",
           "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


# Pythons Debian does not ship -> the nearest that runs code written for them (a newer
# minor runs an older one's code; 3.12 code runs on 3.13), with a warning in the build log
SUBSTITUTE_PYTHON = {"3.9": "3.11", "3.10": "3.11", "3.12": "3.13"}


def _python_key(python_version: str | None) -> str:
    version = str(python_version or DEFAULT_PYTHON)
    parts = version.split(".")
    key = ".".join(parts[:2])
    key = SUBSTITUTE_PYTHON.get(key, key)
    if key not in SUITE_FOR_PYTHON or (len(parts) > 2 and not parts[2].isdigit()):
        have = ", ".join(sorted(SUITE_FOR_PYTHON))
        raise ImageBuildError(
            f"python_version={version!r} is not available: debian_slim offers Python {have} "
            f"(Debian's own python3; {', '.join(sorted(SUBSTITUTE_PYTHON))} get the nearest "
            "of those); use one of those, or Image.from_registry with an image that has the "
            "Python you need")
    return key


def suite_for(python_version: str | None) -> str:
    return SUITE_FOR_PYTHON[_python_key(python_version)]


def python_substitution(python_version: str | None) -> str | None:
    """The warning for a python_version that gets another Python, else None."""
    got = _python_key(python_version)
    asked = ".".join(str(python_version or DEFAULT_PYTHON).split(".")[:2])
    if got == asked:
        return None
    return (f"WARNING: python_version={python_version!r}: Debian ships no Python {asked}; "
            f"this image has Python {got} (Debian's), which runs code written for {asked}. "
            f"Pin {got} to silence this, or use Image.from_registry for exactly {asked}.")


def layer_key(parent: str | None, step: dict[str, Any], ctx: dict[str, Any],
              force: bool = False, *, secret_key: bytes | None = None) -> str:
    """Content address of a step's result: parent + step + the config it runs under.
    Secret values enter only as an HMAC under the server's `secret_key` (never readable
    from a key, yet a different value is a different layer). `force` mixes in a nonce:
    the step (and all after it) rebuild."""
    skip = (*SECRET_FIELDS, "force_build",
            *(UNKEYED_FUNCTION_FIELDS if step["kind"] == "function" else ()))
    hashable = {k: v for k, v in step.items() if k not in skip}
    if step.get("secret_env"):
        hashable["secret_names"] = sorted(step["secret_env"])
        hashable["secret_hmac"] = hmac.new(secret_key or b"", canonical_json(
            step["secret_env"]).encode(), hashlib.sha256).hexdigest()
    doc = {"parent": parent, "step": hashable, "ctx": ctx}
    if force:
        doc["nonce"] = secrets.token_hex(16)
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def image_digest(top: str, config: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json({"top": top, "config": config}).encode()).hexdigest()


def empty_config() -> dict[str, Any]:
    return {"env": {}, "workdir": None, "entrypoint": None, "cmd": None, "user": None}


def fold_config(config: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """The image config after a config-only step (Dockerfile semantics)."""
    out = {**config, "env": dict(config["env"])}
    kind = step["kind"]
    if kind == "env":
        out["env"].update(step["env"])
    elif kind == "workdir":
        out["workdir"] = step["path"]
    elif kind == "entrypoint":
        out["entrypoint"] = list(step["argv"])
        out["cmd"] = None  # Docker: setting ENTRYPOINT resets an inherited CMD
    elif kind == "cmd":
        out["cmd"] = list(step["argv"])
    elif kind == "user":
        out["user"] = step["user"] or None
    return out


def _check_args(what: str, items: list[str]) -> list[str]:
    for item in items:
        if not item or item.startswith("-") or "\n" in item or "\0" in item:
            raise ImageBuildError(
                f"{what}: {item!r} is not a package name (names cannot be empty, start with "
                "'-' or hold a newline); pass options through extra_options instead")
    return [shlex.quote(i) for i in items]


def commands_for(step: dict[str, Any]) -> list[str]:
    """Shell commands of a run-like step."""
    kind = step["kind"]
    if kind == "run":
        return list(step["commands"])
    if kind == "function":
        py = 'PY=$(command -v python3 || command -v python) || { echo "run_function: the image has no python3" >&2; exit 127; }'
        return [f"{py}; cd /.sbx/src && exec \"$PY\" -c {shlex.quote(FUNCTION_BOOT)} "
                f"{shlex.quote(step['module'])} {shlex.quote(step['qualname'])}"]
    extra = step.get("extra_options") or ""
    if kind == "apt":
        pkgs = " ".join(_check_args("apt_install", step["packages"]))
        return ["apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                f"--no-install-recommends {extra} {pkgs} && rm -rf /var/lib/apt/lists/*"]
    opts = []
    for flag, field in (("--index-url", "index_url"), ("--extra-index-url", "extra_index_url"),
                        ("--find-links", "find_links")):
        if step.get(field):
            opts.append(f"{flag} {shlex.quote(step[field])}")
    if step.get("pre"):
        opts.append("--pre")
    pkgs = _check_args(kind, step.get("packages") or [])
    if kind == "pip":
        return [f"python3 -m pip install {' '.join(opts)} {extra} {' '.join(pkgs)}"]
    if kind == "uv_pip":
        cmds = ["command -v uv >/dev/null || python3 -m pip install -q uv"]
        reqs = []
        for i, text in enumerate(step.get("requirements") or []):
            b64 = base64.b64encode(text.encode()).decode()
            cmds.append(f"echo {b64} | base64 -d > /tmp/sbx-requirements-{i}.txt")
            reqs.append(f"-r /tmp/sbx-requirements-{i}.txt")
        cmds.append(f"uv pip install --system --break-system-packages {' '.join(opts)} "
                    f"{extra} {' '.join(reqs)} {' '.join(pkgs)}")
        return [" && ".join(cmds)]
    raise ImageBuildError(f"internal: {kind} is not a command step")


def describe(step: dict[str, Any]) -> str:
    kind = step["kind"]
    if kind == "run":
        return "RUN " + " && ".join(step["commands"])[:200]
    if kind in ("apt", "pip", "uv_pip"):
        what = " ".join(step.get("packages") or []) or "requirements"
        return {"apt": "apt_install", "pip": "pip_install", "uv_pip": "uv_pip_install"}[kind] + " " + what[:200]
    if kind == "files":
        entries = step["entries"]
        if len(entries) == 1 and entries[0].get("type") == "dir":
            return f"mkdir {entries[0]['path']}"
        return f"add {len(entries)} local entries under {_common_dir(entries)}"
    if kind == "registry":
        return f"from_registry {step['ref']}"
    if kind == "function":
        return f"run_function {step['module']}.{step['qualname']}"
    if kind == "debian_slim":
        return f"debian_slim python {step.get('python_version') or DEFAULT_PYTHON}"
    return kind


def _common_dir(entries: list[dict[str, Any]]) -> str:
    import os.path

    paths = [e["path"] for e in entries]
    return os.path.commonpath(paths) if paths else "/"
