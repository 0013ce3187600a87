"""The job queue: huey carries the work, ``JobStore`` keeps the record.

WHY huey: a well-kept library that gives the embedded default (``SqliteHuey``, no server, the
queue survives a restart), an in-memory/immediate mode for tests, and ``RedisHuey`` when one
machine is not enough — with the same task code. The queue's only task is ``run_job(job_id)``;
everything about a job (request, status, progress, result, error) lives in the store, so any
duplicate or stale delivery is harmless: a job runs only if it can be *claimed*
(queued -> running, atomically).

Crash recovery (chosen: mark, do not re-run). On ``start()`` jobs left ``running`` by a dead
process become ``interrupted`` — their partial artifacts stay in their run folder. We do not
re-run them automatically: a job that killed its process (out of memory, say) would kill it
again on every start. Asking for the same request again re-runs it (interrupted runs are never
cache hits). Jobs still ``queued`` are re-enqueued, since nothing of them ran yet; with
persistent huey storage they may be delivered twice, and the claim makes the second a no-op.
This assumes one app process owns ``root`` (the embedded setup). Finished runs are rows in the
store plus files in ``runs/``: nothing a crash can undo.

Backends: ``"sqlite"`` (default; ``<root>/queue.db``), ``"memory"`` (MemoryHuey + consumer
threads), ``"immediate"`` (runs inside ``submit``; for tests and scripts), or a
``redis://...`` URL (RedisHuey; needs the ``redis`` package). ``backend=None`` reads
``QLISTEN_QUEUE`` and falls back to ``"sqlite"``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback as traceback_mod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huey import MemoryHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer

from .context import JobCancelled, JobContext, JobError
from .hashing import request_hash
from .store import CANCELLED, DONE, FAILED, QUEUED, TERMINAL, JobStore

Runner = Callable[[dict[str, Any], JobContext], dict[str, Any]]

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 300

# Jobs executing in this process right now (any JobQueue). Crash recovery must not mark these
# interrupted: they are alive, just outlived a stop() whose timeout ran out.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


class _EmbeddedConsumer(Consumer):
    """huey's consumer without signal handlers: it runs inside the app (maybe not on the main
    thread, where ``signal.signal`` would fail), and the app owns SIGINT/SIGTERM."""

    def _set_signal_handlers(self) -> None:  # noqa: D401 - huey hook
        return None


def make_huey(root: Path, backend: str | None) -> Huey:
    """Build the huey instance for a backend name or URL (see module docstring)."""
    backend = backend or os.environ.get("QLISTEN_QUEUE") or "sqlite"
    name = "qlisten"
    if backend == "sqlite":
        return SqliteHuey(name, filename=str(Path(root) / "queue.db"), results=False)
    if backend == "memory":
        return MemoryHuey(name, results=False)
    if backend == "immediate":
        return MemoryHuey(name, results=False, immediate=True)
    if backend.startswith(("redis://", "rediss://", "unix://")):
        from huey import RedisHuey
        from huey.exceptions import ConfigurationError

        try:
            return RedisHuey(name, url=backend, results=False)
        except ConfigurationError as exc:
            raise RuntimeError(
                f"queue backend {backend!r} needs the 'redis' package (pip install redis): {exc}"
            ) from exc
    raise ValueError(
        f"unknown queue backend {backend!r}: use 'sqlite', 'memory', 'immediate' or a redis:// URL"
    )


def _user_message(exc: BaseException, stage: str) -> str:
    """One short sentence for the page; the traceback is stored apart."""
    if isinstance(exc, JobError):
        text = str(exc).strip() or "The run failed."
    else:
        detail = (str(exc).strip().splitlines() or [""])[0]
        text = f"The run failed during '{stage}': {type(exc).__name__}"
        text += f": {detail}" if detail else "."
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


class JobQueue:
    """Submit requests, poll them, cancel them, list runs. See the module docstring."""

    def __init__(self, root: Path, runner: Runner, *, workers: int = 1,
                 backend: str | None = None, poll_interval: float = 0.05) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs_dir = self.root / "runs"
        self.cache_dir = self.root / "cache"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.root / "runs.db", self.runs_dir)
        self.runner = runner
        self.workers = int(workers)
        self.poll_interval = poll_interval
        self.huey = make_huey(self.root, backend)
        self._task = self.huey.task(name="qlisten.run_job")(self._execute)
        self._consumer: Consumer | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Recover from a previous crash, then start the in-process consumer threads.

        Returns the ids of jobs marked interrupted.
        """
        with _LIVE_LOCK:
            alive = frozenset(_LIVE)
        interrupted = self.store.mark_running_interrupted(alive)
        if self._consumer is None and not self.huey.immediate:
            self._consumer = _EmbeddedConsumer(
                self.huey, workers=self.workers, worker_type="thread", periodic=False,
                initial_delay=0.05, backoff=1.15, max_delay=0.5, check_worker_health=False,
            )
            self._consumer.start()
        for job_id in self.store.ids_with_status(QUEUED):
            self._task(job_id)
        return interrupted

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the consumer; waits up to ``timeout`` s for running jobs (None: forever).

        A job still running after the timeout goes on in its (daemon) thread; if the process
        exits meanwhile, the next start() marks it interrupted.
        """
        if self._consumer is None:
            return
        self._consumer.shutdown_timeout = timeout
        self._consumer.stop(graceful=True)
        self._consumer = None

    def __enter__(self) -> JobQueue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- API ------------------------------------------------------------------------------
    def submit(self, request: dict[str, Any]) -> str:
        """Queue a request; return its job id (= run id).

        Content-hash cache: an identical request that finished returns its run id at once,
        one that is queued or running returns that job's id; neither runs the runner again.
        """
        key = request_hash(request)  # validates: JSON values only
        job_id, created = self.store.create_or_reuse(request, key)
        if created:
            run_dir = self.runs_dir / job_id
            (run_dir / "request.json").write_text(
                json.dumps({"id": job_id, "request_hash": key, "request": request}, indent=2,
                           ensure_ascii=False), encoding="utf-8")
            self._task(job_id)
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        """id, status, stage, progress, message, timestamps, error, run_dir, request, ..."""
        return self.store.get(job_id)

    def result(self, job_id: str) -> dict[str, Any] | None:
        """The runner's summary of a done job; None while it is not done (or if it failed)."""
        return self.store.get_result(job_id)

    def traceback(self, job_id: str) -> str | None:
        """The stored traceback of a failed job, for debugging (never the user message)."""
        return self.store.get_traceback(job_id)

    def cancel(self, job_id: str) -> str:
        """Cancel a queued job at once, or ask a running one to stop at its next progress
        report. Returns the status right after the call."""
        return self.store.request_cancel(job_id)

    def list_runs(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        """Newest first, optionally only one status."""
        return self.store.list(limit=limit, status=status)

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job reaches a terminal status; return its status.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.store.get(job_id)
            if st["status"] in TERMINAL:
                return st
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} still {st['status']} ({st['stage']}) after {timeout} s")
            time.sleep(self.poll_interval)

    # --- worker side ----------------------------------------------------------------------
    def _execute(self, job_id: str) -> None:
        """The huey task. Never raises: every outcome is written to the store."""
        with _LIVE_LOCK:  # before the claim, so a concurrent start() never sees it orphaned
            _LIVE.add(job_id)
        try:
            if not self.store.claim(job_id):
                return  # cancelled before it started, or a duplicate delivery
            self._run_claimed(job_id)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(job_id)

    def _run_claimed(self, job_id: str) -> None:
        request = self.store.get_request(job_id)
        ctx = JobContext(job_id, self.store, self.runs_dir / job_id, self.cache_dir)
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = self.runner(request, ctx)
            json.dumps(result)  # the result must be storable; fail clearly here if not
        except JobCancelled:
            self.store.finish(job_id, CANCELLED, message=f"cancelled during '{ctx.stage}'")
            return
        except Exception as exc:  # noqa: BLE001 - one job's failure must not touch others
            if self.store.get(job_id)["cancel_requested"]:
                self.store.finish(job_id, CANCELLED, message=f"cancelled during '{ctx.stage}'")
                return
            log.warning("job %s failed: %s", job_id, exc)
            self.store.finish(job_id, FAILED, error=_user_message(exc, ctx.stage),
                              traceback=traceback_mod.format_exc())
            return
        self.store.finish(job_id, DONE, result=result, message="done")
