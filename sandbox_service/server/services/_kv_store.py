"""The Dict and Queue tables of the embedded SQLite store (server layer). Mixed into
`SQLiteStore`; the methods are the `Store` interface's (see _store.py). Keys and values
are the opaque bytes the SDK made; nothing here unpickles them. Each method runs on the
store's one thread, so its statements are never interleaved with another's.
"""

from __future__ import annotations

import abc
import time
from typing import Any

PAGE_BYTES = 32 << 20  # one answer's data at most (at least one entry): memory stays bounded

KV_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv_objects (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT NOT NULL, name TEXT,
    created_at REAL NOT NULL, ephemeral INTEGER NOT NULL DEFAULT 0, seen_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS kv_objects_name ON kv_objects(kind, owner, name)
    WHERE name IS NOT NULL;
CREATE TABLE IF NOT EXISTS dict_entries (
    dict_id TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (dict_id, key));
CREATE INDEX IF NOT EXISTS dict_entries_seq ON dict_entries(dict_id, seq);
CREATE TABLE IF NOT EXISTS queue_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue_id TEXT NOT NULL, part TEXT NOT NULL,
    value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS queue_items_part ON queue_items(queue_id, part, seq);
"""


class KvStore(abc.ABC):
    """The Dict and Queue part of the `Store` interface (a multi-machine store implements
    these too); `KvTables` is SQLite's."""

    @abc.abstractmethod
    async def kv_create(self, rec: dict[str, Any]) -> dict[str, Any]: ...
    @abc.abstractmethod
    async def kv_get(self, object_id: str) -> dict[str, Any] | None: ...
    @abc.abstractmethod
    async def kv_by_name(self, kind: str, owner: str, name: str) -> dict[str, Any] | None: ...
    @abc.abstractmethod
    async def kv_list(self, kind: str, owner: str | None) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    async def kv_count(self, kind: str, owner: str) -> int: ...
    @abc.abstractmethod
    async def kv_touch(self, object_id: str) -> None: ...
    @abc.abstractmethod
    async def kv_delete(self, object_id: str) -> None: ...
    @abc.abstractmethod
    async def kv_stale_ephemeral(self, before: float) -> list[str]: ...
    @abc.abstractmethod
    async def dict_get(self, dict_id: str, key: bytes) -> bytes | None: ...
    @abc.abstractmethod
    async def dict_put(self, dict_id: str, entries: list[tuple[bytes, bytes]],
                       skip_if_exists: bool, max_entries: int) -> bool | None: ...
    @abc.abstractmethod
    async def dict_pop(self, dict_id: str, key: bytes) -> bytes | None: ...
    @abc.abstractmethod
    async def dict_len(self, dict_id: str) -> int: ...
    @abc.abstractmethod
    async def dict_page(self, dict_id: str, after_seq: int,
                        limit: int) -> list[tuple[int, bytes, bytes]]: ...
    @abc.abstractmethod
    async def dict_clear(self, dict_id: str) -> None: ...
    @abc.abstractmethod
    async def queue_put(self, queue_id: str, part: str, values: list[bytes], max_items: int,
                        max_partitions: int) -> str | None: ...
    @abc.abstractmethod
    async def queue_take(self, queue_id: str, part: str, n: int) -> list[bytes]: ...
    @abc.abstractmethod
    async def queue_after(self, queue_id: str, part: str, after_seq: int,
                          limit: int) -> list[tuple[int, bytes]]: ...
    @abc.abstractmethod
    async def queue_len(self, queue_id: str, part: str | None) -> int: ...
    @abc.abstractmethod
    async def queue_clear(self, queue_id: str, part: str | None) -> None: ...


class KvTables(KvStore):
    """SQL for Dicts and Queues; `self._run` / `self._db` come from SQLiteStore."""

    _run: Any
    _db: Any

    def _tx(self, body: Any) -> Any:
        """`body(db)` in one write transaction (on the store's thread): committed if it
        returns, rolled back if it raises, so the shared connection never stays inside one."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = body(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    # ---- the objects ----------------------------------------------------------------
    async def kv_create(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Insert `rec` unless its owner has a `kind` object of that name; return the one
        that exists now (a concurrent create wins)."""
        def go():
            self._db.execute(
                "INSERT OR IGNORE INTO kv_objects(id, kind, owner, name, created_at, ephemeral,"
                " seen_at) VALUES (?,?,?,?,?,?,?)",
                (rec["id"], rec["kind"], rec["owner"], rec.get("name"), rec["created_at"],
                 int(rec.get("ephemeral", False)), rec["created_at"]))
            if rec.get("name") is None:
                return rec
            return self._kv_row("SELECT * FROM kv_objects WHERE kind=? AND owner=? AND name=?",
                                (rec["kind"], rec["owner"], rec["name"]))
        return await self._run(go)

    def _kv_row(self, sql: str, params: tuple) -> dict[str, Any] | None:
        cur = self._db.execute(sql, params)
        row = cur.fetchone()
        if row is None:
            return None
        rec = dict(zip([c[0] for c in cur.description], row))
        rec["ephemeral"] = bool(rec["ephemeral"])
        return rec

    async def kv_get(self, object_id: str) -> dict[str, Any] | None:
        return await self._run(self._kv_row, "SELECT * FROM kv_objects WHERE id=?", (object_id,))

    async def kv_by_name(self, kind: str, owner: str, name: str) -> dict[str, Any] | None:
        return await self._run(self._kv_row, "SELECT * FROM kv_objects WHERE kind=? AND owner=? "
                               "AND name=?", (kind, owner, name))

    async def kv_list(self, kind: str, owner: str | None) -> list[dict[str, Any]]:
        def go():
            sql = "SELECT id FROM kv_objects WHERE kind=? AND name IS NOT NULL"
            params: tuple = (kind,)
            if owner is not None:
                sql, params = sql + " AND owner=?", (kind, owner)
            ids = [r[0] for r in self._db.execute(sql + " ORDER BY name", params)]
            out = []
            for i in ids:
                rec = self._kv_row("SELECT * FROM kv_objects WHERE id=?", (i,))
                if kind in ("dict", "queue"):
                    table, col = (("dict_entries", "dict_id") if kind == "dict"
                                  else ("queue_items", "queue_id"))
                    rec["entries"] = self._db.execute(
                        f"SELECT COUNT(*) FROM {table} WHERE {col}=?", (i,)).fetchone()[0]
                out.append(rec)
            return out
        return await self._run(go)

    async def kv_count(self, kind: str, owner: str) -> int:
        rows = await self._run(lambda: self._db.execute(
            "SELECT COUNT(*) FROM kv_objects WHERE kind=? AND owner=? AND name IS NOT NULL",
            (kind, owner)).fetchone())
        return rows[0]

    async def kv_touch(self, object_id: str) -> None:
        await self._run(lambda: self._db.execute(
            "UPDATE kv_objects SET seen_at=? WHERE id=?", (time.time(), object_id)))

    async def kv_delete(self, object_id: str) -> None:
        def go(db):
            db.execute("DELETE FROM dict_entries WHERE dict_id=?", (object_id,))
            db.execute("DELETE FROM queue_items WHERE queue_id=?", (object_id,))
            db.execute("DELETE FROM kv_objects WHERE id=?", (object_id,))
        await self._run(self._tx, go)

    async def kv_stale_ephemeral(self, before: float) -> list[str]:
        rows = await self._run(lambda: self._db.execute(
            "SELECT id FROM kv_objects WHERE ephemeral=1 AND seen_at<?", (before,)).fetchall())
        return [r[0] for r in rows]

    # ---- Dicts ----------------------------------------------------------------------
    async def dict_get(self, dict_id: str, key: bytes) -> bytes | None:
        rows = await self._run(lambda: self._db.execute(
            "SELECT value FROM dict_entries WHERE dict_id=? AND key=?", (dict_id, key)).fetchall())
        return rows[0][0] if rows else None

    async def dict_put(self, dict_id: str, entries: list[tuple[bytes, bytes]],
                       skip_if_exists: bool, max_entries: int) -> bool | None:
        """True if written; False if skip_if_exists found a key; None if it would pass
        `max_entries`."""
        def go(db):
            if skip_if_exists and any(db.execute(
                    "SELECT 1 FROM dict_entries WHERE dict_id=? AND key=?",
                    (dict_id, k)).fetchone() for k, _ in entries):
                return False
            have = db.execute("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM dict_entries "
                              "WHERE dict_id=?", (dict_id,)).fetchone()
            new = sum(1 for k, _ in entries if db.execute(
                "SELECT 1 FROM dict_entries WHERE dict_id=? AND key=?",
                (dict_id, k)).fetchone() is None)
            if have[0] + new > max_entries:
                return None
            seq = have[1]
            for k, v in entries:
                seq += 1
                db.execute("INSERT INTO dict_entries(dict_id, key, value, seq) "
                           "VALUES (?,?,?,?) ON CONFLICT(dict_id, key) DO UPDATE SET "
                           "value=excluded.value", (dict_id, k, v, seq))
            return True
        return await self._run(self._tx, go)

    async def dict_pop(self, dict_id: str, key: bytes) -> bytes | None:
        rows = await self._run(lambda: self._db.execute(
            "DELETE FROM dict_entries WHERE dict_id=? AND key=? RETURNING value",
            (dict_id, key)).fetchall())
        return rows[0][0] if rows else None

    async def dict_len(self, dict_id: str) -> int:
        return (await self._run(lambda: self._db.execute(
            "SELECT COUNT(*) FROM dict_entries WHERE dict_id=?", (dict_id,)).fetchone()))[0]

    def _fitting(self, sql: str, params: tuple) -> list[int]:
        """The seqs of `sql`'s (seq, size) rows that fit in PAGE_BYTES (at least one)."""
        seqs, total = [], 0
        for seq, size in self._db.execute(sql, params):
            total += size or 0
            if seqs and total > PAGE_BYTES:
                break
            seqs.append(seq)
        return seqs

    async def dict_page(self, dict_id: str, after_seq: int,
                        limit: int) -> list[tuple[int, bytes, bytes]]:
        def go():
            seqs = self._fitting("SELECT seq, length(key) + length(value) FROM dict_entries "
                                 "WHERE dict_id=? AND seq>? ORDER BY seq LIMIT ?",
                                 (dict_id, after_seq, limit))
            if not seqs:
                return []
            return self._db.execute(
                "SELECT seq, key, value FROM dict_entries WHERE dict_id=? AND seq BETWEEN ? AND ? "
                "ORDER BY seq", (dict_id, seqs[0], seqs[-1])).fetchall()
        return await self._run(go)

    async def dict_clear(self, dict_id: str) -> None:
        await self._run(lambda: self._db.execute(
            "DELETE FROM dict_entries WHERE dict_id=?", (dict_id,)))

    # ---- Queues ---------------------------------------------------------------------
    async def queue_put(self, queue_id: str, part: str, values: list[bytes],
                        max_items: int, max_partitions: int) -> str | None:
        """None if put; else why not ("full" or "partitions")."""
        def go(db):
            have = db.execute("SELECT COUNT(*) FROM queue_items WHERE queue_id=? AND "
                              "part=?", (queue_id, part)).fetchone()[0]
            if have + len(values) > max_items:
                return "full"
            if have == 0 and db.execute(
                    "SELECT COUNT(DISTINCT part) FROM queue_items WHERE queue_id=?",
                    (queue_id,)).fetchone()[0] >= max_partitions:
                return "partitions"
            db.executemany("INSERT INTO queue_items(queue_id, part, value) VALUES (?,?,?)",
                           [(queue_id, part, v) for v in values])
            return None
        return await self._run(self._tx, go)

    async def queue_take(self, queue_id: str, part: str, n: int) -> list[bytes]:
        """Remove and return the oldest `n` items of the partition (fewer if it has less,
        or if they pass PAGE_BYTES)."""
        def go():
            seqs = self._fitting("SELECT seq, length(value) FROM queue_items WHERE queue_id=? "
                                 "AND part=? ORDER BY seq LIMIT ?", (queue_id, part, n))
            if not seqs:
                return []
            marks = ",".join("?" * len(seqs))
            return self._db.execute(f"DELETE FROM queue_items WHERE seq IN ({marks}) "
                                    "RETURNING seq, value", tuple(seqs)).fetchall()
        rows = await self._run(go)
        return [v for _, v in sorted(rows)]

    async def queue_after(self, queue_id: str, part: str, after_seq: int,
                          limit: int) -> list[tuple[int, bytes]]:
        def go():
            seqs = self._fitting("SELECT seq, length(value) FROM queue_items WHERE queue_id=? "
                                 "AND part=? AND seq>? ORDER BY seq LIMIT ?",
                                 (queue_id, part, after_seq, limit))
            if not seqs:
                return []
            return self._db.execute(
                "SELECT seq, value FROM queue_items WHERE queue_id=? AND part=? AND seq "
                "BETWEEN ? AND ? ORDER BY seq", (queue_id, part, seqs[0], seqs[-1])).fetchall()
        return await self._run(go)

    async def queue_len(self, queue_id: str, part: str | None) -> int:
        if part is None:
            sql, params = "SELECT COUNT(*) FROM queue_items WHERE queue_id=?", (queue_id,)
        else:
            sql, params = ("SELECT COUNT(*) FROM queue_items WHERE queue_id=? AND part=?",
                           (queue_id, part))
        return (await self._run(lambda: self._db.execute(sql, params).fetchone()))[0]

    async def queue_clear(self, queue_id: str, part: str | None) -> None:
        if part is None:
            sql, params = "DELETE FROM queue_items WHERE queue_id=?", (queue_id,)
        else:
            sql, params = "DELETE FROM queue_items WHERE queue_id=? AND part=?", (queue_id, part)
        await self._run(lambda: self._db.execute(sql, params))
