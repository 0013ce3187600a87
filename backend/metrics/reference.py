"""Reference embeddings and statistics, cached on disk by CONTENT hash.

Why content hashing: fadtk keys its cache by directory and model name, so a changed reference
set silently reuses stale statistics. Here the key is sha256 over (backend name, backend
weights hash, backend preprocessing params, sample rate, and every byte of the reference
data), so any change to the data or the model gives a new entry, and a repeat costs only the
hash. The entry stores the embeddings (KID and bootstrap CIs need them) and the Gaussian fit
(absent when there are too few samples for a full-rank covariance).

Cache folder: `cache_dir` if given, else `$QLISTEN_CACHE/metrics`, else
`<repo>/.qlisten/cache/metrics`. No other state.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.metrics.embeddings import REPO_ROOT, EmbeddingBackend, hash_items
from backend.metrics.frechet import GaussianStats, check_embeddings

CACHE_ENV = "QLISTEN_CACHE"


def default_cache_dir() -> Path:
    """$QLISTEN_CACHE/metrics if set, else <repo>/.qlisten/cache/metrics."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) / "metrics" if root else REPO_ROOT / ".qlisten" / "cache" / "metrics"


@dataclass(frozen=True)
class ReferenceEmbeddings:
    """Embeddings of a reference set, their Gaussian fit (or None), and the cache key."""

    key: str
    backend: str
    embeddings: np.ndarray
    stats: GaussianStats | None
    from_cache: bool

    @property
    def n(self) -> int:
        return int(self.embeddings.shape[0])


def _fit_or_none(emb: np.ndarray) -> GaussianStats | None:
    n, dim = emb.shape
    if n < dim + 1:
        return None
    return GaussianStats(mu=emb.mean(axis=0), sigma=np.cov(emb, rowvar=False), n=n)


class ReferenceCache:
    """Compute-or-load reference embeddings, keyed by content (see module docstring)."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def key(self, backend: EmbeddingBackend, items: Any, sample_rate: int | None = None) -> str:
        """Content hash of (backend identity, preprocessing, sample rate, data bytes)."""
        params = {
            "backend": backend.name,
            "kind": backend.kind,
            "weights": backend.weights_hash,
            "preprocessing": backend.preprocessing,
            "sample_rate": sample_rate,
        }
        return hash_items(items, params)

    def path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.npz"

    def get_or_compute(
        self, backend: EmbeddingBackend, items: Any, sample_rate: int | None = None
    ) -> ReferenceEmbeddings:
        """Load the entry for this content, or embed the reference set and store it."""
        key = self.key(backend, items, sample_rate)
        file = self.path(key)
        if file.exists():
            with np.load(file) as data:
                emb = data["embeddings"].copy()
            return ReferenceEmbeddings(key, backend.name, emb, _fit_or_none(emb), True)
        emb = check_embeddings(backend.embed(items, sample_rate), "reference embeddings")
        stats = _fit_or_none(emb)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        meta = json.dumps(
            {"backend": backend.name, "preprocessing": backend.preprocessing,
             "sample_rate": sample_rate}, default=str,
        )
        arrays: dict[str, Any] = {"embeddings": emb, "meta": np.array(meta)}
        if stats is not None:
            arrays.update(mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n))
        # write-then-rename: a crash or a concurrent reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return ReferenceEmbeddings(key, backend.name, emb, stats, False)
