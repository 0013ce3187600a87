"""Small shared helpers for the benchmarks: timing, environment, writing result tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from backend.quant.int8_kernel import int8_matmul_is_fast

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        # whether compute="auto" sends W8A8 layers to torch._int_mm here (backend/quant/int8_kernel.py)
        "int8_matmul_fast": int8_matmul_is_fast(),
    }


def time_call(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median and min wall time of ``fn`` in milliseconds (after warm-up calls)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "repeats": repeats}


def write_results(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``bench/results/<name>.json`` and ``.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath, mpath = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    jpath.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    mpath.write_text(markdown.rstrip() + "\n")
    return jpath, mpath
