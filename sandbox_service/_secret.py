"""Secret (public layer). For now `Secret.from_dict` carries values from the client into
the sandbox's environment; named, encrypted-at-rest secrets come with the security work.
"""

from __future__ import annotations

import os
from typing import Sequence

from . import _errors as E


class Secret:
    def __init__(self, env: dict[str, str]):
        self._env = dict(env)

    @classmethod
    def from_dict(cls, env_dict: dict[str, str | None]) -> "Secret":
        bad = [k for k, v in env_dict.items() if v is not None and not isinstance(v, str)]
        if bad:
            raise E.InvalidRequestError(f"Secret.from_dict values must be str; {bad[0]} is not")
        return cls({k: v for k, v in env_dict.items() if v is not None})

    @classmethod
    def from_local_environ(cls, env_keys: Sequence[str]) -> "Secret":
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise E.InvalidRequestError(f"not set in the local environment: {', '.join(missing)}")
        return cls({k: os.environ[k] for k in env_keys})

    @classmethod
    def from_name(cls, name: str, **_: object) -> "Secret":
        raise E.NotFoundError(f"named secrets are not available yet (asked for {name!r}): use "
                              "Secret.from_dict or Secret.from_local_environ")

    def __repr__(self) -> str:  # never show values
        return f"Secret(keys={sorted(self._env)})"


def merge_env(env: dict[str, str | None] | None, secrets: Sequence[Secret] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in secrets or ():
        if not isinstance(s, Secret):
            raise E.InvalidRequestError(f"secrets= takes Secret objects, not {type(s).__name__}")
        out.update(s._env)
    for k, v in (env or {}).items():
        if v is not None:
            if not isinstance(v, str):
                raise E.InvalidRequestError(f"env values must be str; {k}={v!r} is not")
            out[k] = v
    return out
