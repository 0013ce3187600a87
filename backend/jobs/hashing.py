"""Content hashes for requests and cached artifacts.

WHY: the cache promise ("the same request returns the stored run at once") is only as good as
the key. We hash *every* request key except a short, explicit list of cosmetic ones. A key the
runner reads but we forgot to list costs at worst a cache miss (a re-run); an allow-list that
forgot a key (say a new method setting) would silently return the WRONG run. So: deny-list.

Keys that determine the output, as the runner defines them today (all are hashed):
``model``, ``recipe`` (method, w_bits, a_bits, the method's settings, calibration set/size),
``prompts`` (or class labels), ``seeds``, ``steps``, ``guidance``, ``sampler``/``scheduler``,
``duration``/``resolution``, ``metrics`` — and any key added later.

Keys that do NOT change the output and are left out of the hash: see ``NON_DETERMINING_KEYS``.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

# Cosmetic / bookkeeping keys only. Never add a key here that the runner reads to compute audio,
# images or scores.
NON_DETERMINING_KEYS: frozenset[str] = frozenset(
    {"label", "name", "note", "notes", "tags", "client", "client_id", "session", "priority"}
)

# Bump when the meaning of a request changes (e.g. the runner's output format, or the audio path
# of an embedded model), so that old cached runs stop matching new requests.
# 2: tiny-sounds audio gained mel-consistency passes after Griffin-Lim (2026-12-01).
HASH_SCHEMA = 2


def _normalise(value: Any, path: str = "request") -> Any:
    """Turn a JSON-like value into one canonical form: 4 and 4.0 hash alike, tuples are lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}; only finite numbers can be part of a request")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path} has a non-string key {k!r}; request keys must be strings")
            out[k] = _normalise(v, f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_normalise(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{path} is a {type(value).__name__}; a request may hold only JSON values "
        "(str, number, bool, None, list, dict)"
    )


def canonical_json(value: Any) -> str:
    """One byte-stable JSON text for a value: sorted keys, no spaces, normalised numbers."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_of(value: Any) -> str:
    """Hex sha256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def request_hash(request: dict[str, Any]) -> str:
    """The cache key of a request: every key except ``NON_DETERMINING_KEYS``, plus the schema."""
    if not isinstance(request, dict):
        raise TypeError(f"a request must be a dict, got {type(request).__name__}")
    determining = {k: v for k, v in request.items() if k not in NON_DETERMINING_KEYS}
    return sha256_of({"schema": HASH_SCHEMA, "request": determining})
