"""The function tables of the embedded SQLite store (server layer): functions, calls,
inputs and outputs, and app updates. Mixed into `SQLiteStore`; the methods are the
`Store` interface's (see _store.py). Arguments and results are stored as the opaque bytes
the SDK and the runner made; nothing here unpickles them.
"""

from __future__ import annotations

import json
from typing import Any

from ._records import AppRecord

FN_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS functions_app ON functions(app_id);
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY, function_id TEXT NOT NULL, created_at REAL NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS calls_open ON calls(finished);
CREATE TABLE IF NOT EXISTS inputs (
    call_id TEXT NOT NULL, idx INTEGER NOT NULL, args BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (call_id, idx));
CREATE TABLE IF NOT EXISTS outputs (
    call_id TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL,
    data BLOB, message TEXT, traceback TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (call_id, seq));
CREATE TABLE IF NOT EXISTS schedules (
    app_id TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL, since REAL NOT NULL,
    last_tick REAL, PRIMARY KEY (app_id, name));
"""


class FunctionTables:
    """SQL for the function tables; `self._run` / `self._exec` / `self._db` come from
    SQLiteStore."""

    _run: Any
    _exec: Any
    _db: Any

    async def update_app(self, rec: AppRecord) -> None:
        await self._run(self._exec, "UPDATE apps SET data=? WHERE id=?",
                        (rec.to_json(), rec.app_id))

    async def list_apps(self, owner: str | None) -> list[AppRecord]:
        if owner is None:
            rows = await self._run(self._exec, "SELECT data FROM apps")
        else:
            rows = await self._run(self._exec, "SELECT data FROM apps WHERE owner=?", (owner,))
        return [AppRecord.from_json(r[0]) for r in rows]

    async def get_schedules(self) -> list[dict[str, Any]]:
        """Each scheduled function's state: its spec (as JSON), since when it counts
        ticks, and the last tick that fired."""
        rows = await self._run(self._exec, "SELECT app_id, name, spec, since, last_tick "
                               "FROM schedules")
        return [{"app_id": r[0], "name": r[1], "spec": r[2], "since": r[3], "last_tick": r[4]}
                for r in rows]

    async def put_schedule(self, st: dict[str, Any]) -> None:
        await self._run(self._exec, "INSERT OR REPLACE INTO schedules(app_id, name, spec, "
                        "since, last_tick) VALUES (?,?,?,?,?)",
                        (st["app_id"], st["name"], st["spec"], st["since"], st["last_tick"]))

    async def delete_schedule(self, app_id: str, name: str) -> None:
        await self._run(self._exec, "DELETE FROM schedules WHERE app_id=? AND name=?",
                        (app_id, name))

    async def put_function(self, rec: dict[str, Any]) -> None:
        await self._run(self._exec, "INSERT OR REPLACE INTO functions(id, app_id, data) "
                        "VALUES (?,?,?)", (rec["function_id"], rec["app_id"], json.dumps(rec)))

    async def get_function(self, function_id: str) -> dict[str, Any] | None:
        rows = await self._run(self._exec, "SELECT data FROM functions WHERE id=?",
                               (function_id,))
        return json.loads(rows[0][0]) if rows else None

    async def list_functions(self, app_id: str | None = None) -> list[dict[str, Any]]:
        if app_id is None:
            rows = await self._run(self._exec, "SELECT data FROM functions")
        else:
            rows = await self._run(self._exec, "SELECT data FROM functions WHERE app_id=?",
                                   (app_id,))
        return [json.loads(r[0]) for r in rows]

    async def put_call(self, rec: dict[str, Any], inputs: list[tuple[int, bytes]]) -> None:
        def _put() -> None:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO calls(id, function_id, created_at, "
                                 "finished, data) VALUES (?,?,?,?,?)",
                                 (rec["call_id"], rec["function_id"], rec["created_at"],
                                  int(rec.get("finished", False)), json.dumps(rec)))
                self._db.executemany("INSERT OR IGNORE INTO inputs(call_id, idx, args) "
                                     "VALUES (?,?,?)",
                                     [(rec["call_id"], i, a) for i, a in inputs])
        await self._run(_put)

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        rows = await self._run(self._exec, "SELECT data FROM calls WHERE id=?", (call_id,))
        return json.loads(rows[0][0]) if rows else None

    async def open_calls(self) -> list[dict[str, Any]]:
        rows = await self._run(self._exec, "SELECT data FROM calls WHERE finished=0")
        return [json.loads(r[0]) for r in rows]

    async def get_input(self, call_id: str, idx: int) -> bytes | None:
        rows = await self._run(self._exec, "SELECT args FROM inputs WHERE call_id=? AND idx=?",
                               (call_id, idx))
        return bytes(rows[0][0]) if rows else None

    async def input_started(self, call_id: str, idx: int, attempts: int) -> None:
        await self._run(self._exec, "UPDATE inputs SET attempts=? WHERE call_id=? AND idx=?",
                        (attempts, call_id, idx))

    async def input_attempts(self, call_id: str) -> dict[int, int]:
        rows = await self._run(self._exec, "SELECT idx, attempts FROM inputs WHERE call_id=?",
                               (call_id,))
        return {r[0]: r[1] for r in rows}

    async def put_output(self, call_id: str, out: dict[str, Any]) -> None:
        await self._run(self._exec, "INSERT OR REPLACE INTO outputs(call_id, seq, idx, status, "
                        "data, message, traceback, created_at) VALUES (?,?,?,?,?,?,?,?)",
                        (call_id, out["seq"], out["index"], out["status"], out.get("data"),
                         out.get("message"), out.get("traceback"), out["created_at"]))

    async def get_outputs(self, call_id: str, after_seq: int,
                          limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self._run(self._exec, "SELECT seq, idx, status, data, message, traceback, "
                               "created_at FROM outputs WHERE call_id=? AND seq>=? ORDER BY seq "
                               "LIMIT ?", (call_id, after_seq, limit))
        return [{"seq": r[0], "index": r[1], "status": r[2],
                 "data": bytes(r[3]) if r[3] is not None else None, "message": r[4],
                 "traceback": r[5], "created_at": r[6]} for r in rows]

    async def delete_calls_before(self, before: float) -> int:
        def _delete() -> int:
            with self._db:
                ids = [r[0] for r in self._db.execute(
                    "SELECT id FROM calls WHERE finished=1 AND created_at<?", (before,))]
                for cid in ids:
                    self._db.execute("DELETE FROM inputs WHERE call_id=?", (cid,))
                    self._db.execute("DELETE FROM outputs WHERE call_id=?", (cid,))
                    self._db.execute("DELETE FROM calls WHERE id=?", (cid,))
                return len(ids)
        return await self._run(_delete)
