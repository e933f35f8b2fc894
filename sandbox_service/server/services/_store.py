"""State store interface and its embedded SQLite implementation (server layer).

Records are plain JSON-able dicts keyed by id; the store knows nothing about runtimes.
SQLite calls run on one dedicated thread so the event loop never blocks on disk. Must not
import FastAPI or any runtime.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import json
import os
import sqlite3
from typing import Any

from security import private_sqlite

from ._fn_store import FN_SCHEMA, FunctionTables
from ._kv_store import KV_SCHEMA, KvStore, KvTables
from ._records import AppRecord, SandboxRecord


class Store(KvStore, abc.ABC):
    """What the server persists: sandboxes, apps and images (more kinds come with their issues)."""

    @abc.abstractmethod
    async def put_sandbox(self, rec: SandboxRecord) -> None: ...

    @abc.abstractmethod
    async def get_sandbox(self, sandbox_id: str) -> SandboxRecord | None: ...

    @abc.abstractmethod
    async def list_sandboxes(self, *, states: tuple[str, ...] | None = None,
                             limit: int = 1000) -> list[SandboxRecord]: ...

    # apps: one namespace of names per owner (the principal's name)
    @abc.abstractmethod
    async def put_app(self, rec: AppRecord) -> None:
        """Insert `rec` (app_id, owner, name, ...) unless that owner already has an app of
        that name (then nothing changes: read it back with get_app_by_name)."""

    @abc.abstractmethod
    async def get_app(self, app_id: str) -> AppRecord | None: ...

    @abc.abstractmethod
    async def get_app_by_name(self, owner: str, name: str) -> AppRecord | None: ...

    @abc.abstractmethod
    async def put_image(self, rec: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def get_image(self, image_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def get_image_by_digest(self, digest: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def list_images(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def delete_image(self, image_id: str) -> bool: ...

    # secrets: one namespace per owner (the principal's name); `ciphertext` is sealed by
    # security._secrets (the store never sees values); `keys` (env names) stay in clear
    @abc.abstractmethod
    async def put_secret(self, rec: dict[str, Any], *, overwrite: bool) -> bool:
        """Insert (or replace when `overwrite`); False when it exists and not `overwrite`.
        `rec` has owner, name, created_at, updated_at, keys, ciphertext."""

    @abc.abstractmethod
    async def get_secret(self, owner: str, name: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def list_secrets(self, owner: str) -> list[dict[str, Any]]:
        """Metadata only (name, keys, created_at, updated_at), no ciphertext."""

    @abc.abstractmethod
    async def delete_secret(self, owner: str, name: str) -> bool: ...

    # functions (services/_functions.py): definitions, calls, their inputs and outputs;
    # arguments and results are opaque bytes (never unpickled by the server)
    @abc.abstractmethod
    async def update_app(self, rec: AppRecord) -> None: ...

    @abc.abstractmethod
    async def list_apps(self, owner: str | None) -> list[AppRecord]: ...

    @abc.abstractmethod
    async def put_function(self, rec: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def get_function(self, function_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def list_functions(self, app_id: str | None = None) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def put_call(self, rec: dict[str, Any], inputs: list[tuple[int, bytes]]) -> None:
        """Write the call record and add `inputs` ((index, pickled args)) not yet stored."""

    @abc.abstractmethod
    async def get_call(self, call_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def open_calls(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def get_input(self, call_id: str, idx: int) -> bytes | None: ...

    @abc.abstractmethod
    async def input_started(self, call_id: str, idx: int, attempts: int) -> None:
        """Record that an input was handed to a container (its attempt count)."""

    @abc.abstractmethod
    async def input_attempts(self, call_id: str) -> dict[int, int]: ...

    @abc.abstractmethod
    async def put_output(self, call_id: str, out: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def get_outputs(self, call_id: str, after_seq: int,
                          limit: int = 1000) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def delete_calls_before(self, before: float) -> int: ...

    async def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sandboxes_state ON sandboxes(state);
CREATE TABLE IF NOT EXISTS apps (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    UNIQUE (owner, name));
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL, created_at REAL NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
    owner TEXT NOT NULL, name TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, ciphertext BLOB NOT NULL, keys TEXT NOT NULL,
    PRIMARY KEY (owner, name));
"""
# state.db files written before secrets had owners: their secrets were the admin's
_MIGRATE_SECRETS = """
ALTER TABLE secrets RENAME TO secrets_v1;
CREATE TABLE secrets (
    owner TEXT NOT NULL, name TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, ciphertext BLOB NOT NULL, keys TEXT NOT NULL,
    PRIMARY KEY (owner, name));
INSERT INTO secrets SELECT 'admin', name, created_at, updated_at, ciphertext, keys
    FROM secrets_v1;
DROP TABLE secrets_v1;
"""
# ... and apps, which were one global namespace: theirs become the admin's
_MIGRATE_APPS = """
ALTER TABLE apps RENAME TO apps_v1;
CREATE TABLE apps (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    UNIQUE (owner, name));
INSERT INTO apps SELECT id, 'admin', name, data FROM apps_v1;
DROP TABLE apps_v1;
"""


class SQLiteStore(FunctionTables, KvTables, Store):
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sbx-sqlite")
        self._db: sqlite3.Connection | None = None
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        db = private_sqlite(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        cols = [r[1] for r in db.execute("PRAGMA table_info(secrets)")]
        if cols and "owner" not in cols:
            db.executescript("BEGIN;" + _MIGRATE_SECRETS + "COMMIT;")
        cols = [r[1] for r in db.execute("PRAGMA table_info(apps)")]
        if cols and "owner" not in cols:
            db.executescript("BEGIN;" + _MIGRATE_APPS + "COMMIT;")
        db.executescript(_SCHEMA)
        db.executescript(FN_SCHEMA)
        db.executescript(KV_SCHEMA)
        os.chmod(self.path, 0o600)
        self._db = db

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _exec(self, sql: str, params: tuple = ()) -> list[tuple]:
        assert self._db is not None
        return self._db.execute(sql, params).fetchall()

    async def put_sandbox(self, rec: SandboxRecord) -> None:
        await self._run(self._exec,
                        "INSERT OR REPLACE INTO sandboxes(id, state, created_at, data) VALUES (?,?,?,?)",
                        (rec.sandbox_id, rec.state, rec.created_at, rec.to_json()))

    async def get_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        rows = await self._run(self._exec, "SELECT data FROM sandboxes WHERE id=?", (sandbox_id,))
        return SandboxRecord.from_json(rows[0][0]) if rows else None

    async def list_sandboxes(self, *, states=None, limit=1000):
        if states:
            marks = ",".join("?" * len(states))
            sql = (f"SELECT data FROM sandboxes WHERE state IN ({marks}) "
                   "ORDER BY created_at DESC LIMIT ?")
            params: tuple = (*states, limit)
        else:
            sql, params = "SELECT data FROM sandboxes ORDER BY created_at DESC LIMIT ?", (limit,)
        return [SandboxRecord.from_json(r[0]) for r in await self._run(self._exec, sql, params)]

    async def put_app(self, rec: AppRecord) -> None:
        await self._run(self._exec, "INSERT OR IGNORE INTO apps(id, owner, name, data) "
                        "VALUES (?,?,?,?)", (rec.app_id, rec.owner, rec.name, rec.to_json()))

    async def get_app(self, app_id: str) -> AppRecord | None:
        rows = await self._run(self._exec, "SELECT data FROM apps WHERE id=?", (app_id,))
        return AppRecord.from_json(rows[0][0]) if rows else None

    async def get_app_by_name(self, owner: str, name: str) -> AppRecord | None:
        rows = await self._run(self._exec, "SELECT data FROM apps WHERE owner=? AND name=?",
                               (owner, name))
        return AppRecord.from_json(rows[0][0]) if rows else None

    async def put_image(self, rec: dict[str, Any]) -> None:
        await self._run(self._exec,
                        "INSERT OR REPLACE INTO images(id, digest, created_at, data) VALUES (?,?,?,?)",
                        (rec["image_id"], rec["digest"], rec["created_at"], json.dumps(rec)))

    async def get_image(self, image_id: str) -> dict[str, Any] | None:
        rows = await self._run(self._exec, "SELECT data FROM images WHERE id=?", (image_id,))
        return json.loads(rows[0][0]) if rows else None

    async def get_image_by_digest(self, digest: str) -> dict[str, Any] | None:
        rows = await self._run(self._exec, "SELECT data FROM images WHERE digest=?", (digest,))
        return json.loads(rows[0][0]) if rows else None

    async def list_images(self) -> list[dict[str, Any]]:
        rows = await self._run(self._exec, "SELECT data FROM images ORDER BY created_at")
        return [json.loads(r[0]) for r in rows]

    async def delete_image(self, image_id: str) -> bool:
        def _delete() -> bool:
            assert self._db is not None
            return self._db.execute("DELETE FROM images WHERE id=?", (image_id,)).rowcount > 0
        return await self._run(_delete)

    async def put_secret(self, rec: dict[str, Any], *, overwrite: bool) -> bool:
        def _put() -> bool:
            assert self._db is not None
            row = (rec["owner"], rec["name"], rec["created_at"], rec["updated_at"],
                   rec["ciphertext"], json.dumps(rec["keys"]))
            insert = ("INSERT INTO secrets(owner, name, created_at, updated_at, ciphertext, "
                      "keys) VALUES (?,?,?,?,?,?)")
            if overwrite:  # keeps the first created_at
                self._db.execute(
                    insert + " ON CONFLICT(owner, name) DO UPDATE SET "
                    "updated_at=excluded.updated_at, ciphertext=excluded.ciphertext, "
                    "keys=excluded.keys", row)
                return True
            return self._db.execute(insert.replace("INSERT", "INSERT OR IGNORE", 1),
                                    row).rowcount > 0
        return await self._run(_put)

    async def get_secret(self, owner: str, name: str) -> dict[str, Any] | None:
        rows = await self._run(self._exec, "SELECT name, created_at, updated_at, keys, ciphertext "
                               "FROM secrets WHERE owner=? AND name=?", (owner, name))
        if not rows:
            return None
        n, c, u, k, ct = rows[0]
        return {"owner": owner, "name": n, "created_at": c, "updated_at": u,
                "keys": json.loads(k), "ciphertext": bytes(ct)}

    async def list_secrets(self, owner: str) -> list[dict[str, Any]]:
        rows = await self._run(self._exec, "SELECT name, created_at, updated_at, keys "
                               "FROM secrets WHERE owner=? ORDER BY name", (owner,))
        return [{"name": n, "created_at": c, "updated_at": u, "keys": json.loads(k)}
                for n, c, u, k in rows]

    async def delete_secret(self, owner: str, name: str) -> bool:
        def _delete() -> bool:
            assert self._db is not None
            return self._db.execute("DELETE FROM secrets WHERE owner=? AND name=?",
                                    (owner, name)).rowcount > 0
        return await self._run(_delete)

    async def close(self) -> None:
        def _close():
            if self._db is not None:
                self._db.close()
                self._db = None
        await self._run(_close)
        self._pool.shutdown(wait=True)
