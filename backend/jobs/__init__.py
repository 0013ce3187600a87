"""Job queue and persistent run store of qlisten (huey + SQLite); see queue.py for the design."""

from .context import JobCancelled, JobContext, JobError
from .hashing import NON_DETERMINING_KEYS, canonical_json, request_hash, sha256_of
from .queue import JobQueue, Runner, make_huey
from .store import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    STATUSES,
    TERMINAL,
    JobStore,
)

__all__ = [
    "CANCELLED", "DONE", "FAILED", "INTERRUPTED", "QUEUED", "RUNNING", "STATUSES", "TERMINAL",
    "NON_DETERMINING_KEYS", "JobCancelled", "JobContext", "JobError", "JobQueue", "JobStore",
    "Runner", "canonical_json", "make_huey", "request_hash", "sha256_of",
]
