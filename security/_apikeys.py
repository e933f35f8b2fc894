"""API keys and scoped tokens (security layer; must not import the server or runtimes).

A key is `sbk_<id>_<secret>`: the id finds the record, the secret is stored only as its
sha256 (secrets are 256 random bits, so a fast hash is enough) and compared in constant
time. Each key acts for a principal (a name) with a scope:
  - `user`: the principal's own objects, nothing else; may mint narrower tokens;
  - `sandbox`: exec, files, logs and info of one sandbox (hand it to a less trusted
    component, e.g. an agent process, instead of your own key);
  - `app`: create, list and use the sandboxes of one app.
Keys expire (`expires_at`) and can be revoked; records live in their own SQLite file
(`$SBX_HOME/keys.db`, 0600). The admin token (SBX_HOME/token) is the operator's and is not
a key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import string
import time
from typing import Any

from ._keyfile import private_sqlite

KEY_PREFIX = "sbk_"
SCOPES = ("user", "sandbox", "app")
PRINCIPAL_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._@-]{0,63}$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(r"^sbk_([a-z0-9]{12})_([A-Za-z0-9_-]{20,100})$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL, principal TEXT NOT NULL, scope TEXT NOT NULL,
    target TEXT, name TEXT, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL,
    created_by TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS keys_principal ON keys(principal);
"""


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    name: str
    scope: str = "admin"            # admin | user | sandbox | app
    target: str | None = None       # the sandbox or app id of a scoped token
    key_id: str | None = None
    expires_at: float | None = None

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


ADMIN = Principal("admin")


class KeyStore:
    def __init__(self, path: str):
        self.path = path
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sbx-keys")
        self._db: sqlite3.Connection | None = None
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = private_sqlite(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def _run(self, fn, *args):
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def _rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        assert self._db is not None
        cur = self._db.execute(sql, params)
        cols = [c[0] for c in cur.description] if cur.description else []
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    async def create(self, *, principal: str, scope: str, target: str | None,
                     ttl_s: float | None, name: str | None, created_by: str) -> tuple[str, dict]:
        """A new key: (the key itself, shown only now; its record)."""
        key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
        secret = secrets.token_urlsafe(32)
        now = time.time()
        rec = {"id": key_id, "hash": hashlib.sha256(secret.encode()).hexdigest(),
               "principal": principal, "scope": scope, "target": target, "name": name,
               "created_at": now, "expires_at": now + ttl_s if ttl_s else None,
               "revoked_at": None, "created_by": created_by}
        await self._run(lambda: self._db.execute(  # type: ignore[union-attr]
            "INSERT INTO keys VALUES (:id,:hash,:principal,:scope,:target,:name,:created_at,"
            ":expires_at,:revoked_at,:created_by)", rec))
        return f"{KEY_PREFIX}{key_id}_{secret}", _public(rec)

    async def resolve(self, token: str | None) -> Principal | None:
        """The principal of a valid, unexpired, unrevoked key; None otherwise."""
        m = _KEY_RE.match(token or "")
        if not m:
            return None
        key_id, secret = m.groups()
        now = time.time()
        cached = self._cache.get(key_id)
        if cached and now - cached[0] < 1.0:  # revocation takes effect within a second
            rec = cached[1]
        else:
            rows = await self._run(self._rows, "SELECT * FROM keys WHERE id=?", (key_id,))
            rec = rows[0] if rows else None
            self._cache[key_id] = (now, rec)
            if len(self._cache) > 10_000:
                self._cache.clear()
        if rec is None or rec["revoked_at"] is not None:
            return None
        if rec["expires_at"] is not None and rec["expires_at"] <= now:
            return None
        if not hmac.compare_digest(rec["hash"], hashlib.sha256(secret.encode()).hexdigest()):
            return None
        return Principal(rec["principal"], rec["scope"], rec["target"], key_id, rec["expires_at"])

    async def list(self, principal: str | None = None) -> list[dict[str, Any]]:
        if principal is None:
            rows = await self._run(self._rows, "SELECT * FROM keys ORDER BY created_at")
        else:
            rows = await self._run(self._rows, "SELECT * FROM keys WHERE principal=? "
                                   "ORDER BY created_at", (principal,))
        return [_public(r) for r in rows]

    async def get(self, key_id: str) -> dict[str, Any] | None:
        rows = await self._run(self._rows, "SELECT * FROM keys WHERE id=?", (key_id,))
        return _public(rows[0]) if rows else None

    async def revoke(self, key_id: str) -> None:
        await self._run(lambda: self._db.execute(  # type: ignore[union-attr]
            "UPDATE keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
            (time.time(), key_id)))
        self._cache.pop(key_id, None)

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await self._run(_close)
        self._pool.shutdown(wait=True)


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "hash"}
