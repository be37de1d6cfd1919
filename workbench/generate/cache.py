"""The request cache ``cache.sqlite`` (SQLite, WAL): one row per request key, the run's memory.

Key: sha256 of (model, messages, params, slot id) — see :func:`request_key`. A row stores the
request last sent (a truncated answer's re-send carries a larger ``max_tokens``), the raw answer, the parsed result, usage summed over attempts, latency, status and the
attempt count. Statuses:

- ``ok``: a valid answer is stored (finished; never sent again),
- ``failed``: every attempt gave an invalid answer; the raw text is kept (finished),
- ``error``: transport errors exhausted the retries (not finished: a re-run sends it again),
- ``submitted``: part of an open Batch API job (not sent again until the job is collected).

Every finished request is committed before the next one is recorded, so ``kill -9`` at any moment
loses at most answers that were in flight; a re-run resends exactly those.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

FINISHED = ("ok", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    slot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    language TEXT NOT NULL,
    family TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    raw_response TEXT,
    result TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_slot ON requests(slot_id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any], slot_id: str) -> str:
    canonical = json.dumps([model, messages, params, slot_id], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Entry:
    key: str
    slot_id: str
    kind: str
    status: str
    raw_response: str | None
    result: dict[str, Any] | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    attempts: int
    batch_id: str | None
    updated_at: str


class RequestCache:
    """Thin synchronous wrapper; used from one thread (the event loop's) at a time."""

    def __init__(self, path: Path | None):
        """The cache at ``path``; ``None``: an empty one in memory (estimates for a run not made yet)."""
        self.path = Path(path) if path is not None else Path(":memory:")
        if path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(":memory:" if path is None else self.path, timeout=30, isolation_level=None,
                                  check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable against process kill (not power loss)
            self.db.executescript(_SCHEMA)
        except sqlite3.OperationalError:
            self.db.close()
            raise
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise damaged_cache_error(self.path, err) from None

    def close(self) -> None:
        self.db.close()

    def _all(self, sql: str, params: Any = ()) -> list[tuple]:
        """Every row of one statement; damaged pages become one line that says how to keep the
        readable answers (SQLite reports them only when a query reaches them)."""
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            raise  # locked, full disk, read-only: not damage (the CLI has a line for a full disk)
        except sqlite3.DatabaseError as err:
            raise damaged_cache_error(self.path, err) from None

    def get(self, key: str) -> Entry | None:
        rows = self._all(
            "SELECT key, slot_id, kind, status, raw_response, result, error, prompt_tokens, completion_tokens,"
            " cost_usd, attempts, batch_id, updated_at FROM requests WHERE key=?", (key,))
        return _entry(rows[0]) if rows else None

    def get_many(self, keys: list[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._all(
                "SELECT key, slot_id, kind, status, raw_response, result, error, prompt_tokens, completion_tokens,"
                f" cost_usd, attempts, batch_id, updated_at FROM requests WHERE key IN ({','.join('?' * len(chunk))})",
                chunk)
            found.update({row[0]: _entry(row) for row in rows})
        return found

    def record(self, key: str, *, slot_id: str, kind: str, language: str, family: str, model: str,
               request: dict[str, Any], status: str, raw_response: str | None = None,
               result: dict[str, Any] | None = None, error: str | None = None, prompt_tokens: int = 0,
               completion_tokens: int = 0, cost_usd: float = 0.0, latency_s: float = 0.0, attempts: int = 0,
               batch_id: str | None = None) -> None:
        """Insert or replace one request's state; usage and attempts are totals, not increments."""
        stamp = _now()
        self._all(
            "INSERT INTO requests (key, slot_id, kind, language, family, model, request, status, raw_response,"
            " result, error, prompt_tokens, completion_tokens, cost_usd, latency_s, attempts, batch_id,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET request=excluded.request, status=excluded.status,"
            " raw_response=excluded.raw_response,"
            " result=excluded.result, error=excluded.error, prompt_tokens=excluded.prompt_tokens,"
            " completion_tokens=excluded.completion_tokens, cost_usd=excluded.cost_usd,"
            " latency_s=excluded.latency_s, attempts=excluded.attempts, batch_id=excluded.batch_id,"
            " updated_at=excluded.updated_at",
            (key, slot_id, kind, language, family, model, json.dumps(request, ensure_ascii=False), status,
             raw_response, None if result is None else json.dumps(result, ensure_ascii=False), error,
             prompt_tokens, completion_tokens, cost_usd, latency_s, attempts, batch_id, stamp, stamp))

    def update(self, key: str, *, status: str, raw_response: str | None, result: dict[str, Any] | None,
               error: str | None, prompt_tokens: int, completion_tokens: int, cost_usd: float,
               attempts: int) -> None:
        """Store the outcome of an already recorded request (Batch API results)."""
        self._all(
            "UPDATE requests SET status=?, raw_response=?, result=?, error=?, prompt_tokens=?, completion_tokens=?,"
            " cost_usd=?, attempts=?, updated_at=? WHERE key=?",
            (status, raw_response, None if result is None else json.dumps(result, ensure_ascii=False), error,
             prompt_tokens, completion_tokens, cost_usd, attempts, _now(), key))

    def request_of(self, key: str) -> dict[str, Any] | None:
        rows = self._all("SELECT request FROM requests WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def meta(self, name: str) -> str | None:
        rows = self._all("SELECT value FROM meta WHERE name=?", (name,))
        return rows[0][0] if rows else None

    def set_meta(self, name: str, value: str) -> None:
        self._all("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                  (name, value))

    def usage(self) -> list[dict[str, Any]]:
        """Tokens and cost per (language, family), brainstorm requests included, over the whole run."""
        rows = self._all(
            "SELECT language, family, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd)"
            " FROM requests GROUP BY language, family ORDER BY language, family")
        return [{"language": r[0], "family": r[1], "requests": r[2], "prompt_tokens": r[3], "completion_tokens": r[4],
                 "cost_usd": round(r[5], 6)} for r in rows]

    def total_cost(self) -> float:
        """USD spent on every request of this run so far (all statuses, all invocations)."""
        return float(self._all("SELECT COALESCE(SUM(cost_usd), 0) FROM requests")[0][0])

    def counts(self) -> dict[str, int]:
        return dict(self._all("SELECT status, COUNT(*) FROM requests GROUP BY status"))

    def submitted(self) -> dict[str, list[str]]:
        """Open batch jobs: batch id -> keys submitted in it."""
        jobs: dict[str, list[str]] = {}
        for key, batch_id in self._all("SELECT key, batch_id FROM requests WHERE status='submitted'"):
            jobs.setdefault(batch_id, []).append(key)
        return jobs


def damaged_cache_error(path: Path, err: BaseException) -> WorkbenchError:
    """One line for a damaged ``cache.sqlite``: keep its readable answers, or start afresh."""
    return WorkbenchError(
        f"the request cache is damaged ({err})", where=str(path),
        fix=f"keep its finished answers: 'workbench generate {Path(path).parent} --salvage-cache' copies every "
            "readable request into a new cache.sqlite and keeps the damaged file beside it; only the "
            "unreadable ones are sent again")


def salvage(path: Path) -> dict[str, Any]:
    """Copy every readable row of a damaged cache at ``path`` into a new cache that takes its place;
    the damaged file (with its -wal/-shm) is kept beside it as ``cache.damaged-<time>.sqlite``.

    Rows are read one rowid at a time, so a damaged page costs only the rows on it (an index that
    is damaged costs nothing); SQLite's ``.dump`` stops at the first damaged page and rolls back
    what it had. Returns counts: rows kept, rowids unreadable, and the damaged file's new name
    (``kept`` None: SQLite's check found the file intact, and it is left as it is)."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("no request cache to salvage", where=str(path))
    if _intact(path):
        return {"kept": None, "unreadable": 0, "damaged": None}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    damaged = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    for suffix in ("", "-wal", "-shm"):  # the WAL holds committed answers too: it moves with the file
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{damaged}{suffix}")
    source_db = sqlite3.connect(damaged, isolation_level=None)
    partial = path.with_name(f".{path.name}.salvage")
    for suffix in ("", "-wal", "-shm"):  # an earlier salvage that was interrupted
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    fresh = RequestCache(partial)
    kept = unreadable = 0
    try:
        columns = [c for c in _COLUMNS if c != "key"]
        try:
            last = source_db.execute("SELECT max(rowid) FROM requests").fetchone()[0] or 0
        except sqlite3.DatabaseError:  # the rightmost page is damaged: probe as far as the file could hold rows
            last = damaged.stat().st_size // 64
        for rowid in range(1, last + 1):
            try:
                row = source_db.execute(f"SELECT key, {', '.join(columns)} FROM requests WHERE rowid=?", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                unreadable += 1
                continue
            if row is not None:
                fresh.db.execute(f"INSERT OR REPLACE INTO requests (key, {', '.join(columns)}) VALUES "
                                 f"({', '.join('?' * (len(columns) + 1))})", row)
                kept += 1
        try:
            for name, value in source_db.execute("SELECT name, value FROM meta").fetchall():
                fresh.set_meta(name, value)
        except sqlite3.DatabaseError:
            pass  # remembered endpoint probes only: they are probed again
    finally:
        source_db.close()
        fresh.close()
    Path(f"{fresh.path}").rename(path)
    return {"kept": kept, "unreadable": unreadable, "damaged": str(damaged)}


def _intact(path: Path) -> bool:
    """SQLite's own page-by-page check finds nothing wrong with the file."""
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


_COLUMNS = ("key", "slot_id", "kind", "language", "family", "model", "request", "status", "raw_response", "result",
            "error", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "attempts", "batch_id",
            "created_at", "updated_at")


def _entry(row: tuple) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]) if row[5] else None, row[6],
                 row[7], row[8], row[9], row[10], row[11], row[12])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
