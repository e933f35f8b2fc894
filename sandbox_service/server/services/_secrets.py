"""Named secrets: create, list, delete, and resolve names into environment variables
(server layer). Values are sealed by `security._secrets` before they reach the store, are
opened only to be handed to a container's environment (a sandbox or a build step), and
never appear in a response, a log line or an error message: errors name secrets and keys,
never values.

Every principal has its own namespace (the owner is the principal's name; the admin token's
is "admin"): one principal's secret named "db" is invisible to another, who may have a "db"
of its own, and a name that another principal uses answers exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

from security import SecretBox, SecretCorrupted, check_secret

from ...wire import errors as E
from ._store import Store

log = logging.getLogger("sbx.server.secrets")


def secret_meta(rec: dict[str, Any]) -> dict[str, Any]:
    return {"name": rec["name"], "keys": list(rec["keys"]), "created_at": rec["created_at"],
            "updated_at": rec["updated_at"]}


class SecretService:
    def __init__(self, store: Store, home: str):
        self.store = store
        self.home = home
        self._box: SecretBox | None = None

    def _sealer(self) -> SecretBox:
        if self._box is None:  # the key file is made on first use, then reused
            self._box = SecretBox.for_home(self.home)
        return self._box

    async def create(self, owner: str, name: str, env: dict[str, str], *,
                     overwrite: bool) -> dict[str, Any]:
        try:
            check_secret(name, env)
        except ValueError as e:
            raise E.InvalidRequestError(str(e)) from None
        box = await asyncio.to_thread(self._sealer)
        now = time.time()
        rec = {"owner": owner, "name": name, "created_at": now, "updated_at": now,
               "keys": sorted(env), "ciphertext": box.seal(name, env, owner)}
        if not await self.store.put_secret(rec, overwrite=overwrite):
            raise E.ConflictError(f"secret {name!r} already exists: pass overwrite=True "
                                  "(`sbx secret create --force`) to replace it")
        log.info("secret %s/%s %s (keys: %s)", owner, name,
                 "written" if overwrite else "created", ", ".join(sorted(env)))
        return secret_meta(await self.get(owner, name))

    async def get(self, owner: str, name: str,
                  required_keys: Iterable[str] = ()) -> dict[str, Any]:
        rec = await self.store.get_secret(owner, name)
        if rec is None:
            raise E.NotFoundError(f"secret {name!r} not found: create it with `sbx secret "
                                  f"create {name} KEY=VALUE` or Secret.from_dict(...)")
        missing = sorted(set(required_keys) - set(rec["keys"]))
        if missing:
            raise E.InvalidRequestError(f"secret {name!r} is missing required keys: "
                                        f"{', '.join(missing)} (it has: "
                                        f"{', '.join(rec['keys']) or 'none'})")
        return rec

    async def list(self, owner: str) -> list[dict[str, Any]]:
        return [secret_meta(r) for r in await self.store.list_secrets(owner)]

    async def delete(self, owner: str, name: str) -> None:
        if not await self.store.delete_secret(owner, name):
            raise E.NotFoundError(f"secret {name!r} not found")
        log.info("secret %s/%s deleted", owner, name)

    async def resolve(self, owner: str, names: Iterable[str]) -> dict[str, str]:
        """The merged environment of `owner`'s secrets `names`, later names winning;
        NotFoundError naming the first unknown one."""
        env: dict[str, str] = {}
        for name in names:
            rec = await self.get(owner, name)
            box = await asyncio.to_thread(self._sealer)
            try:
                env.update(box.open(name, rec["ciphertext"], owner))
            except SecretCorrupted as e:
                raise E.ConflictError(str(e)) from None
        return env
