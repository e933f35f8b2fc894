"""The audit log: an append-only record of who did what to which object (security layer;
must not import the server or runtimes).

Records live in their own SQLite file (`$SBX_HOME/audit.db`, 0600) with no update or
delete path in the service, so the API can only ever add to it. A record holds the time,
the principal (the token's identity), the action (`sandbox.create`, `sandbox.exec`,
`file.read`, ...), the object id, the HTTP status and a small detail dict. It never holds
request bodies, environment values, file contents or command arguments (a command is
recorded by its program name and argument count: arguments may carry credentials).
Writes go through one worker thread and never make a request wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import sqlite3
import time
from typing import Any

from ._keyfile import private_sqlite

log = logging.getLogger("sbx.audit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, principal TEXT NOT NULL,
    action TEXT NOT NULL, object TEXT, status INTEGER, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_object ON audit(object);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
MAX_DETAIL = 2048


class AuditLog:
    def __init__(self, path: str):
        self.path = path
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sbx-audit")
        self._db: sqlite3.Connection | None = None
        self._pending: set[asyncio.Future] = set()
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = private_sqlite(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        self._db = db

    def _insert(self, rec: tuple) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO audit(ts, principal, action, object, status, detail) "
                         "VALUES (?,?,?,?,?,?)", rec)

    def record(self, principal: str, action: str, obj: str | None = None,
               status: int | None = None, **detail: Any) -> None:
        """Queue one record (returns at once; a failure is logged, never raised)."""
        text = json.dumps(detail, default=str, separators=(",", ":"))[:MAX_DETAIL]
        rec = (time.time(), principal, action, obj, status, text)
        try:
            fut = asyncio.wrap_future(self._pool.submit(self._insert, rec))
        except RuntimeError:  # shut down
            return
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("audit record lost: %s", fut.exception())

    async def query(self, *, obj: str | None = None, action: str | None = None,
                    principal: str | None = None, since: float | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
        where, params = [], []
        for column, value in (("object", obj), ("principal", principal)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if action is not None:  # "sandbox" matches sandbox.create, sandbox.exec, ...
            where.append("(action = ? OR action LIKE ?)")
            params += [action, action.rstrip(".") + ".%"]
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        sql = ("SELECT seq, ts, principal, action, object, status, detail FROM audit"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY seq DESC LIMIT ?")
        params.append(limit)

        def run() -> list[tuple]:
            assert self._db is not None
            return self._db.execute(sql, params).fetchall()
        rows = await asyncio.wrap_future(self._pool.submit(run))
        return [{"seq": r[0], "ts": r[1], "principal": r[2], "action": r[3], "object": r[4],
                 "status": r[5], "detail": json.loads(r[6])} for r in reversed(rows)]

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=5)

        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await asyncio.wrap_future(self._pool.submit(_close))
        self._pool.shutdown(wait=True)
