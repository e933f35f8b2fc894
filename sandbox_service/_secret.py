"""Secret (public layer), Modal's API.

Two kinds travel differently:
- inline (`from_dict`, `from_local_environ`, `from_dotenv`): values go from this process
  with the request, as environment variables of the sandbox or build step;
- named (`from_name`, made with `Secret.objects.create` / `create_deployed` or
  `sbx secret create`): stored on the server encrypted at rest; a request carries only the
  name (`secret_names`) and the server puts the values in the container's environment.
  Values of a named secret never come back to any client.

`from_name` is lazy: nothing is looked up until a sandbox or build uses it; then an
unknown name is a NotFoundError naming it and `required_keys` that the secret lacks are an
InvalidRequestError listing them (checked by the server).

Precedence in a sandbox: the sandbox's own `env=` > inline secrets > named secrets > the
image's environment.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

from ._sync import Method
from .wire import errors as E

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise E.InvalidRequestError(f"secret name {name!r} is not valid: 1-64 of "
                                    "[a-zA-Z0-9._-], starting with a letter or digit")
    return name


async def _objects_create(name: str, env_dict: dict[str, str], *, allow_existing: bool = False,
                          overwrite: bool = False, client: Any = None, **_: Any) -> None:
    """Store a named secret on the server. `allow_existing`: no error when one of that name
    exists (it is left as is); `overwrite`: replace it."""
    from ._client import default_client

    body = {"name": _check_name(name), "env": _str_values(env_dict), "overwrite": overwrite}
    try:
        await (client or default_client()).request("POST", "/v1/secrets", json_body=body)
    except E.ConflictError:
        if not allow_existing:
            raise


async def _objects_list(*, client: Any = None, **_: Any) -> list[dict[str, Any]]:
    """Names, key names and times of the stored secrets (never values)."""
    from ._client import default_client

    return (await (client or default_client()).request("GET", "/v1/secrets"))["secrets"]


async def _objects_delete(name: str, *, allow_missing: bool = False, client: Any = None,
                          **_: Any) -> None:
    from ._client import default_client

    try:
        await (client or default_client()).request("DELETE", f"/v1/secrets/{_check_name(name)}")
    except E.NotFoundError:
        if not allow_missing:
            raise


async def _create_deployed(deployment_name: str, env_dict: dict[str, str], *,
                           overwrite: bool = False, client: Any = None, **_: Any) -> str:
    """Modal's older name for `Secret.objects.create(..., overwrite=...)`."""
    await _objects_create(deployment_name, env_dict, overwrite=overwrite, client=client)
    return deployment_name


class _SecretObjects:
    """`Secret.objects.create/list/delete` (Modal 1.x's object manager); each blocks, and
    has `.aio` for async callers."""

    create = Method(_objects_create, "create")
    list = Method(_objects_list, "list")
    delete = Method(_objects_delete, "delete")


def _str_values(env_dict: dict[str, Any]) -> dict[str, str]:
    if not isinstance(env_dict, dict):
        raise E.InvalidRequestError("a secret's contents are a dict of str to str")
    bad = [k for k, v in env_dict.items() if v is not None and not isinstance(v, str)]
    if bad:
        raise E.InvalidRequestError(f"secret values must be str; {bad[0]} is not")
    return {k: v for k, v in env_dict.items() if v is not None}


class Secret:
    objects = _SecretObjects()

    def __init__(self, env: dict[str, str], *, refs: Sequence[tuple[str, tuple[str, ...]]] = ()):
        self._env = dict(env)
        self._refs: list[tuple[str, tuple[str, ...]]] = list(refs)  # (name, required_keys)

    @classmethod
    def from_dict(cls, env_dict: dict[str, str | None]) -> "Secret":
        return cls(_str_values(env_dict))

    @classmethod
    def from_local_environ(cls, env_keys: Sequence[str]) -> "Secret":
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise E.InvalidRequestError(f"not set in the local environment: {', '.join(missing)}")
        return cls({k: os.environ[k] for k in env_keys})

    @classmethod
    def from_name(cls, name: str, *, environment_name: str | None = None,
                  required_keys: Sequence[str] = (), **_: Any) -> "Secret":
        """A reference to a secret stored on the server, checked when it is used."""
        if isinstance(required_keys, str):
            required_keys = [required_keys]
        return cls({}, refs=[(_check_name(name), tuple(required_keys))])

    @classmethod
    def from_dotenv(cls, path: str | None = None, *, filename: str = ".env") -> "Secret":
        """Values of a .env file, read here (python-dotenv's syntax: comments, `export`,
        single/double quotes, escapes in double quotes). `path` is the file or its folder;
        without it, `filename` is looked for in the current folder and its parents."""
        file = _find_dotenv(path, filename)
        with open(file, encoding="utf-8") as f:
            return cls(parse_dotenv(f.read()))

    create_deployed = Method(_create_deployed, "create_deployed")

    def __repr__(self) -> str:  # never show values
        names = [n for n, _ in self._refs]
        return f"Secret(keys={sorted(self._env)}" + (f", names={names})" if names else ")")


def _find_dotenv(path: str | None, filename: str) -> str:
    if path is not None:
        path = os.path.expanduser(path)
        file = os.path.join(path, filename) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise E.InvalidRequestError(f"no .env file at {file}")
        return file
    folder = os.getcwd()
    while True:
        file = os.path.join(folder, filename)
        if os.path.isfile(file):
            return file
        parent = os.path.dirname(folder)
        if parent == folder:
            raise E.InvalidRequestError(f"no {filename} in {os.getcwd()} or its parents")
        folder = parent


_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "$": "$"}


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse .env text the way python-dotenv does for the common cases: `KEY=VALUE`,
    `export KEY=VALUE`, `# comments`, inline ` # comments` after unquoted values,
    'single' (literal) and "double" (escapes, may span lines) quotes; a bare `KEY` line
    with no `=` is skipped."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    lineno = 1
    while i < n:
        end = text.find("\n", i)
        end = n if end < 0 else end
        line = text[i:end]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            i, lineno = end + 1, lineno + 1
            continue
        if stripped.startswith("export ") or stripped.startswith("export\t"):
            stripped = stripped[7:].lstrip()
        key, eq, rest = stripped.partition("=")
        key = key.strip()
        if not eq:
            i, lineno = end + 1, lineno + 1
            continue
        if not _ENV_KEY.match(key):
            raise E.InvalidRequestError(f".env line {lineno}: {key!r} is not a valid variable name")
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            # the value may run over several lines: scan from the quote in the whole text
            start = i + line.index("=") + 1
            start = text.index(quote, start) + 1
            j, buf = start, []
            while True:
                if j >= n:
                    raise E.InvalidRequestError(f".env line {lineno}: unterminated {quote} quote")
                ch = text[j]
                if ch == "\\" and quote == '"' and j + 1 < n and text[j + 1] in _DQ_ESCAPES:
                    buf.append(_DQ_ESCAPES[text[j + 1]])
                    j += 2
                    continue
                if ch == "\\" and quote == "'" and j + 1 < n and text[j + 1] in ("'", "\\"):
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if ch == quote:
                    break
                buf.append(ch)
                j += 1
            out[key] = "".join(buf)
            lineno += text.count("\n", i, j)
            end = text.find("\n", j)
            end = n if end < 0 else end
        else:
            value = rest
            hash_at = re.search(r"\s#", value)
            if hash_at:
                value = value[:hash_at.start()]
            out[key] = value.strip()
        i, lineno = end + 1, lineno + 1
    return out


def split_secrets(env: dict[str, str | None] | None, secrets: Sequence[Secret] | None
                  ) -> tuple[dict[str, str], list[str], list[tuple[str, tuple[str, ...]]]]:
    """(inline env, named secret names, (name, required_keys) to check) of `env=` and
    `secrets=`: `env=` over inline secrets; named ones are resolved by the server."""
    out: dict[str, str] = {}
    names: list[str] = []
    checks: list[tuple[str, tuple[str, ...]]] = []
    for s in secrets or ():
        if not isinstance(s, Secret):
            raise E.InvalidRequestError(f"secrets= takes Secret objects, not {type(s).__name__}")
        out.update(s._env)
        for name, required in s._refs:
            if name not in names:
                names.append(name)
            if required:
                checks.append((name, required))
    for k, v in (env or {}).items():
        if v is not None:
            if not isinstance(v, str):
                raise E.InvalidRequestError(f"env values must be str; {k}={v!r} is not")
            out[k] = v
    return out, names, checks


def merge_env(env: dict[str, str | None] | None, secrets: Sequence[Secret] | None) -> dict[str, str]:
    """Inline env only: for requests that cannot carry named secrets (exec)."""
    out, names, _ = split_secrets(env, secrets)
    if names:
        raise E.InvalidRequestError(
            f"named secrets ({', '.join(names)}) can be given to Sandbox.create(secrets=...) "
            "and to image build steps, not here: pass them when creating the sandbox")
    return out


async def check_required_keys(client: Any, checks: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Ask the server whether each named secret has its `required_keys`."""
    for name, required in checks:
        await client.request("GET", f"/v1/secrets/{name}",
                             params=[("required_keys", k) for k in required])
