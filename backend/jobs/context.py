"""What a runner sees of the queue: its run folder, a progress reporter, a shared cache.

WHY a context object: the runner (load -> calibrate -> quantize -> generate -> score) must not
know about huey or SQLite; it only needs somewhere to write, a way to say how far it got (which
is also where a cancel reaches it: cancellation is cooperative, torch work cannot be killed
safely mid-kernel), and a content-addressed cache so an expensive quantized denoiser is built
once and reused by requests that differ only in prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .hashing import sha256_of
from .store import JobStore


class JobCancelled(Exception):
    """Raised by ``ctx.progress`` once the job was cancelled; let it propagate."""


class JobError(Exception):
    """Raise this from a runner for an expected failure (bad input, model not available
    offline): its message is shown to the user as is, without the exception type."""


class JobContext:
    """Handed to ``runner(request, ctx)``; see the module docstring."""

    def __init__(self, job_id: str, store: JobStore, run_dir: Path, cache_dir: Path) -> None:
        self.job_id = job_id
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir)
        self._store = store
        self.stage = "starting"

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        """Persist the current stage and progress in [0, 1] (polled by the UI).

        Raises ``JobCancelled`` if a cancel was requested: call it between units of work.
        """
        self.stage = stage
        if self._store.report_progress(self.job_id, stage, fraction, message):
            raise JobCancelled(f"job {self.job_id} was cancelled during {stage!r}")

    def cached_path(self, kind: str, key: dict[str, Any], suffix: str = "") -> Path:
        """Path of a shared artifact named by the content hash of ``key``.

        Example: ``ctx.cached_path("denoiser", {"model": m, "recipe": r}, ".safetensors")``.
        The path may not exist yet; the folder does. Two jobs may build the same artifact at
        once, so write to a temporary name in the same folder and ``os.replace`` it into place.
        """
        if not kind or "/" in kind or "\\" in kind or kind.startswith("."):
            raise ValueError(f"cache kind must be a plain folder name, got {kind!r}")
        folder = self.cache_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{sha256_of(key)[:32]}{suffix}"
