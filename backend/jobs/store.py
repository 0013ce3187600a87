"""The durable record of jobs and runs: one SQLite file (WAL) beside the runs folder.

WHY its own store and not huey's result storage: huey is the transport (who runs what, when);
it forgets a task once executed and MemoryHuey forgets everything on restart. The UI needs ids
that survive a browser disconnect, a killed worker and an app restart, a history to list, and a
content-hash index for the cache. Artifacts (wav, png, npz, json) live as files in
``<root>/runs/<run_id>/``; this index holds the metadata and job state.

Every public method opens its own short-lived connection, so the store is safe to use from
any thread (the huey worker threads, gradio handlers) and from several processes; writes that
must be atomic with a read (cache lookup + insert, claim) run under ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED)
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (DONE, FAILED, CANCELLED, INTERRUPTED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    request_json     TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL,
    stage            TEXT NOT NULL DEFAULT '',
    progress         REAL NOT NULL DEFAULT 0,
    message          TEXT NOT NULL DEFAULT '',
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    error            TEXT,
    traceback        TEXT,
    run_dir          TEXT NOT NULL,
    result_json      TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cache_hits       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_hash ON jobs (request_hash, status);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
"""

# Columns shown to callers by status(); the traceback is kept apart (debugging only).
_PUBLIC = (
    "id", "status", "stage", "progress", "message", "created_at", "started_at", "finished_at",
    "error", "run_dir", "request_hash", "cancel_requested", "cache_hits",
)


def new_run_id() -> str:
    """A sortable, unique id: UTC time to the second plus 8 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class JobStore:
    """SQLite index of jobs; see the module docstring for why it exists."""

    def __init__(self, db_path: Path, runs_dir: Path) -> None:
        self.db_path = Path(db_path)
        self.runs_dir = Path(runs_dir)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # --- submit ---------------------------------------------------------------------------
    def create_or_reuse(self, request: dict[str, Any], request_hash: str) -> tuple[str, bool]:
        """Return ``(job_id, created)``.

        Reuses, in this order: a finished (``done``) run of the same hash whose run folder still
        exists; a ``queued``/``running`` job of the same hash. Otherwise inserts a new queued job.
        Failed, cancelled and interrupted jobs are never reused: asking again means trying again.
        """
        request_json = json.dumps(request, sort_keys=True, ensure_ascii=False)
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, status, run_dir FROM jobs WHERE request_hash = ? AND status IN (?,?,?)"
                " ORDER BY (status = ?) DESC, created_at DESC",
                (request_hash, DONE, QUEUED, RUNNING, DONE),
            ).fetchall()
            for row in rows:
                if row["status"] == DONE and not Path(row["run_dir"]).is_dir():
                    continue  # its artifacts were deleted: not a usable cache entry
                conn.execute("UPDATE jobs SET cache_hits = cache_hits + 1 WHERE id = ?",
                             (row["id"],))
                return row["id"], False
            job_id = new_run_id()
            run_dir = self.runs_dir / job_id
            conn.execute(
                "INSERT INTO jobs (id, request_json, request_hash, status, created_at, run_dir)"
                " VALUES (?,?,?,?,?,?)",
                (job_id, request_json, request_hash, QUEUED, time.time(), str(run_dir)),
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return job_id, True

    # --- worker side ----------------------------------------------------------------------
    def claim(self, job_id: str) -> bool:
        """queued -> running, atomically. False if the job is not queued (cancelled, already
        claimed by a duplicate delivery, ...): the caller must then not run it."""
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, started_at = ?, stage = 'starting'"
                " WHERE id = ? AND status = ?",
                (RUNNING, time.time(), job_id, QUEUED),
            )
            return cur.rowcount == 1

    def report_progress(self, job_id: str, stage: str, fraction: float, message: str) -> bool:
        """Persist stage/progress of a running job; return True if a cancel was requested."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        with self._connect() as conn:
            conn.execute(
                "UPDATE jobs SET stage = ?, progress = ?, message = ? WHERE id = ? AND status = ?",
                (stage, fraction, message, job_id, RUNNING),
            )
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def finish(self, job_id: str, status: str, *, result: Any = None, error: str | None = None,
               traceback: str | None = None, message: str | None = None) -> None:
        """Move a running job to a terminal status (only from running: never overwrite an
        outcome that another path already recorded)."""
        if status not in TERMINAL:
            raise ValueError(f"{status!r} is not a terminal status")
        result_json = None if result is None else json.dumps(result, ensure_ascii=False)
        with self._connect() as conn:
            conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, result_json = ?, error = ?,"
                " traceback = ?, message = COALESCE(?, message),"
                " progress = CASE WHEN ? = 'done' THEN 1.0 ELSE progress END"
                " WHERE id = ? AND status = ?",
                (status, time.time(), result_json, error, traceback, message, status, job_id,
                 RUNNING),
            )

    # --- control --------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> str:
        """Cancel: a queued job becomes ``cancelled`` at once; a running one gets a flag the
        runner sees at its next ``ctx.progress``. Returns the status after the call."""
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["status"] == QUEUED:
                conn.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, cancel_requested = 1,"
                    " message = 'cancelled before it started' WHERE id = ?",
                    (CANCELLED, time.time(), job_id),
                )
                return CANCELLED
            if row["status"] == RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return row["status"]

    def mark_running_interrupted(self, alive: frozenset[str] = frozenset()) -> list[str]:
        """Crash recovery: jobs left ``running`` by a dead process become ``interrupted``.

        ``alive``: ids still executing in this process (e.g. after a stop() whose timeout ran
        out, then a new start()); they are left alone.
        """
        with self._transaction() as conn:
            ids = [r["id"] for r in conn.execute(
                "SELECT id FROM jobs WHERE status = ?", (RUNNING,)) if r["id"] not in alive]
            conn.executemany(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ?"
                " AND status = ?",
                [(INTERRUPTED, time.time(),
                  "The run was interrupted: the app or its worker stopped while it ran. "
                  "Submit it again to re-run it.", job_id, RUNNING) for job_id in ids],
            )
        return ids

    def ids_with_status(self, status: str) -> list[str]:
        with self._connect() as conn:
            return [r["id"] for r in conn.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY created_at", (status,))]

    # --- reading --------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        """Public view of one job (no traceback). Raises KeyError for an unknown id."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_PUBLIC)}, request_json FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _public(row)

    def get_result(self, job_id: str) -> Any:
        with self._connect() as conn:
            row = conn.execute("SELECT status, result_json FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        if row["status"] != DONE or row["result_json"] is None:
            return None
        return json.loads(row["result_json"])

    def get_traceback(self, job_id: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT traceback FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return row["traceback"]

    def get_request(self, job_id: str) -> dict[str, Any]:
        with self._connect() as conn:
            row = conn.execute("SELECT request_json FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return json.loads(row["request_json"])

    def list(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        sql = f"SELECT {', '.join(_PUBLIC)}, request_json FROM jobs"
        args: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*args, int(limit))).fetchall()
        return [_public(r) for r in rows]


def _public(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in _PUBLIC}
    out["cancel_requested"] = bool(out["cancel_requested"])
    out["request"] = json.loads(row["request_json"])
    return out
