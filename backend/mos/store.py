"""Durable SQLite store for sessions, stimuli, raters and ratings.

Why these settings: WAL lets rater requests read while another writes; ``synchronous=FULL``
makes each COMMIT reach the disk before the HTTP answer goes out, so a kill -9 or a power cut
after a rater saw "saved" loses nothing. Each trial's ratings and the rater's new position are
written in ONE transaction (``BEGIN IMMEDIATE``), so a crash leaves either the whole trial or
none of it; a UNIQUE key on (rater, trial, stimulus) makes a double submit impossible to count
twice. One connection per call keeps threads (FastAPI's pool) from sharing a connection.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_hours REAL NOT NULL,
    config_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conditions (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    cond_id TEXT NOT NULL,
    label TEXT NOT NULL,
    role TEXT NOT NULL,
    position INTEGER NOT NULL,
    meta_json TEXT NOT NULL,
    PRIMARY KEY (session_id, cond_id)
);
CREATE TABLE IF NOT EXISTS items (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    item_key TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    files_json TEXT NOT NULL,
    PRIMARY KEY (session_id, item_key)
);
CREATE TABLE IF NOT EXISTS raters (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    token_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    plan_json TEXT NOT NULL,
    n_trials INTEGER NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    consent_at REAL,
    training_at REAL,
    completed_at REAL,
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS stimuli (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    rater_id TEXT NOT NULL REFERENCES raters(id),
    path TEXT NOT NULL,
    cond_id TEXT,
    item_key TEXT,
    fetched_at REAL
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    rater_id TEXT NOT NULL REFERENCES raters(id),
    trial_index INTEGER NOT NULL,
    trial_kind TEXT NOT NULL,
    stimulus_id TEXT NOT NULL REFERENCES stimuli(id),
    cond_id TEXT,
    item_key TEXT,
    value REAL NOT NULL,
    played INTEGER NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (rater_id, trial_index, stimulus_id)
);
CREATE INDEX IF NOT EXISTS ratings_session ON ratings(session_id);
CREATE INDEX IF NOT EXISTS stimuli_rater ON stimuli(rater_id);
CREATE INDEX IF NOT EXISTS raters_session ON raters(session_id);
"""


class TrialConflict(Exception):
    """A trial submission that does not fit the rater's position (double submit, skip ahead)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Store:
    """Thin durable layer; all SQL of the package lives here."""

    def __init__(self, db_path: str | Path):
        self.db_path = str(db_path)
        Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: commits on success, rolls back on any exception."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # --- set-up -------------------------------------------------------------------------
    def insert_session(
        self,
        session_id: str,
        protocol: str,
        title: str,
        expires_hours: float,
        config: dict,
        conditions: list[dict],
        items: list[dict],
    ) -> None:
        with self.write() as con:
            con.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?)",
                (session_id, protocol, title, time.time(), expires_hours, json.dumps(config)),
            )
            for pos, c in enumerate(conditions):
                con.execute(
                    "INSERT INTO conditions VALUES (?,?,?,?,?,?)",
                    (
                        session_id,
                        c["cond_id"],
                        c["label"],
                        c["role"],
                        pos,
                        json.dumps(c.get("meta", {})),
                    ),
                )
            for it in items:
                con.execute(
                    "INSERT INTO items VALUES (?,?,?,?,?)",
                    (session_id, it["key"], it["prompt"], it["seed"], json.dumps(it["files"])),
                )

    def insert_rater(
        self,
        rater_id: str,
        session_id: str,
        token_hash: str,
        seed: int,
        plan: dict,
        stimuli: list[dict],
        expires_at: float | None,
    ) -> None:
        """Rater, plan (trial order with opaque stimulus ids) and stimulus map in one commit."""
        with self.write() as con:
            con.execute(
                "INSERT INTO raters (id, session_id, token_hash, seed, plan_json, n_trials,"
                " created_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    rater_id,
                    session_id,
                    token_hash,
                    seed,
                    json.dumps(plan),
                    len(plan["trials"]),
                    time.time(),
                    expires_at,
                ),
            )
            con.executemany(
                "INSERT INTO stimuli (id, session_id, rater_id, path, cond_id, item_key)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (s["id"], session_id, rater_id, s["path"], s.get("cond_id"), s.get("item_key"))
                    for s in stimuli
                ],
            )

    # --- reads ---------------------------------------------------------------------------
    def session(self, session_id: str) -> dict | None:
        with self.read() as con:
            row = con.execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
            if row is None:
                return None
            out = dict(row)
            out["config"] = json.loads(out.pop("config_json"))
            out["conditions"] = [
                dict(r) | {"meta": json.loads(r["meta_json"])}
                for r in con.execute(
                    "SELECT * FROM conditions WHERE session_id=? ORDER BY position", (session_id,)
                )
            ]
            out["items"] = [
                dict(r) | {"files": json.loads(r["files_json"])}
                for r in con.execute(
                    "SELECT * FROM items WHERE session_id=? ORDER BY rowid", (session_id,)
                )
            ]
            for c in out["conditions"]:
                c.pop("meta_json")
            for it in out["items"]:
                it.pop("files_json")
            return out

    def sessions(self) -> list[dict]:
        with self.read() as con:
            return [
                dict(r)
                for r in con.execute(
                    "SELECT id, protocol, title, created_at FROM sessions ORDER BY created_at"
                )
            ]

    def rater(self, rater_id: str) -> dict | None:
        with self.read() as con:
            row = con.execute("SELECT * FROM raters WHERE id=?", (rater_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["plan"] = json.loads(out.pop("plan_json"))
        return out

    def raters(self, session_id: str) -> list[dict]:
        with self.read() as con:
            return [
                dict(r)
                for r in con.execute(
                    "SELECT id, seed, n_trials, position, consent_at, training_at, completed_at,"
                    " created_at, expires_at FROM raters WHERE session_id=? ORDER BY created_at",
                    (session_id,),
                )
            ]

    def stimulus(self, stimulus_id: str) -> dict | None:
        with self.read() as con:
            row = con.execute("SELECT * FROM stimuli WHERE id=?", (stimulus_id,)).fetchone()
        return dict(row) if row else None

    def ratings(self, session_id: str) -> list[dict]:
        with self.read() as con:
            return [
                dict(r)
                for r in con.execute(
                    "SELECT * FROM ratings WHERE session_id=? ORDER BY id", (session_id,)
                )
            ]

    # --- rater progress ------------------------------------------------------------------
    def mark(self, rater_id: str, column: str) -> None:
        """Set consent_at / training_at once (later calls keep the first time)."""
        if column not in ("consent_at", "training_at"):
            raise ValueError(column)
        with self.write() as con:
            con.execute(
                f"UPDATE raters SET {column}=COALESCE({column}, ?) WHERE id=?",
                (time.time(), rater_id),
            )

    def mark_fetched(self, stimulus_id: str) -> None:
        with self.write() as con:
            con.execute(
                "UPDATE stimuli SET fetched_at=COALESCE(fetched_at, ?) WHERE id=?",
                (time.time(), stimulus_id),
            )

    def submit_trial(
        self, rater_id: str, trial_index: int, trial_kind: str, rows: list[dict]
    ) -> int:
        """Write one trial's ratings and advance the rater, atomically.

        The position check runs inside the same IMMEDIATE transaction as the insert, so two
        concurrent submits of the same trial cannot both pass it. Returns the new position.
        """
        with self.write() as con:
            r = con.execute(
                "SELECT session_id, position, n_trials FROM raters WHERE id=?", (rater_id,)
            ).fetchone()
            if r is None:
                raise TrialConflict("unknown_rater", "no such rater")
            if trial_index < r["position"]:
                raise TrialConflict("already_rated", f"trial {trial_index} was already rated")
            if trial_index > r["position"]:
                raise TrialConflict("out_of_order", f"the next trial is {r['position']}")
            now = time.time()
            con.executemany(
                "INSERT INTO ratings (session_id, rater_id, trial_index, trial_kind, stimulus_id,"
                " cond_id, item_key, value, played, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r["session_id"],
                        rater_id,
                        trial_index,
                        trial_kind,
                        x["stimulus_id"],
                        x.get("cond_id"),
                        x.get("item_key"),
                        float(x["value"]),
                        int(bool(x["played"])),
                        now,
                    )
                    for x in rows
                ],
            )
            new_pos = trial_index + 1
            done = now if new_pos >= r["n_trials"] else None
            con.execute(
                "UPDATE raters SET position=?, completed_at=COALESCE(completed_at, ?) WHERE id=?",
                (new_pos, done, rater_id),
            )
            return new_pos
