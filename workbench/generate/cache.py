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
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise WorkbenchError(f"the request cache cannot be opened ({err})", where=str(self.path),
                                 fix="restore it, or move it away to start afresh (its answers would be paid for again)") from None

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> Entry | None:
        row = self.db.execute(
            "SELECT key, slot_id, kind, status, raw_response, result, error, prompt_tokens, completion_tokens,"
            " cost_usd, attempts, batch_id, updated_at FROM requests WHERE key=?", (key,)).fetchone()
        return _entry(row) if row else None

    def get_many(self, keys: list[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self.db.execute(
                "SELECT key, slot_id, kind, status, raw_response, result, error, prompt_tokens, completion_tokens,"
                f" cost_usd, attempts, batch_id, updated_at FROM requests WHERE key IN ({','.join('?' * len(chunk))})",
                chunk).fetchall()
            found.update({row[0]: _entry(row) for row in rows})
        return found

    def record(self, key: str, *, slot_id: str, kind: str, language: str, family: str, model: str,
               request: dict[str, Any], status: str, raw_response: str | None = None,
               result: dict[str, Any] | None = None, error: str | None = None, prompt_tokens: int = 0,
               completion_tokens: int = 0, cost_usd: float = 0.0, latency_s: float = 0.0, attempts: int = 0,
               batch_id: str | None = None) -> None:
        """Insert or replace one request's state; usage and attempts are totals, not increments."""
        stamp = _now()
        self.db.execute(
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
        self.db.execute(
            "UPDATE requests SET status=?, raw_response=?, result=?, error=?, prompt_tokens=?, completion_tokens=?,"
            " cost_usd=?, attempts=?, updated_at=? WHERE key=?",
            (status, raw_response, None if result is None else json.dumps(result, ensure_ascii=False), error,
             prompt_tokens, completion_tokens, cost_usd, attempts, _now(), key))

    def request_of(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT request FROM requests WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                        (name, value))

    def usage(self) -> list[dict[str, Any]]:
        """Tokens and cost per (language, family), brainstorm requests included, over the whole run."""
        rows = self.db.execute(
            "SELECT language, family, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd)"
            " FROM requests GROUP BY language, family ORDER BY language, family").fetchall()
        return [{"language": r[0], "family": r[1], "requests": r[2], "prompt_tokens": r[3], "completion_tokens": r[4],
                 "cost_usd": round(r[5], 6)} for r in rows]

    def total_cost(self) -> float:
        """USD spent on every request of this run so far (all statuses, all invocations)."""
        return float(self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests").fetchone()[0])

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())

    def submitted(self) -> dict[str, list[str]]:
        """Open batch jobs: batch id -> keys submitted in it."""
        jobs: dict[str, list[str]] = {}
        for key, batch_id in self.db.execute("SELECT key, batch_id FROM requests WHERE status='submitted'"):
            jobs.setdefault(batch_id, []).append(key)
        return jobs


def _entry(row: tuple) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]) if row[5] else None, row[6],
                 row[7], row[8], row[9], row[10], row[11], row[12])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
