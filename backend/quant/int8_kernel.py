"""Is the integer matmul (``torch._int_mm``) faster than float32 on THIS machine?

Why this exists: ``compute="auto"`` used to send every eligible W8A8 layer through
``torch._int_mm``. On a CPU with AVX512 (VNNI) that is ~4x faster than float32 (bench.core:
0.263x for a 1152->4608 Linear on 512 tokens), but on an AVX2-only CPU PyTorch has no fast int8
kernel: measured on 2026-12-01, the same product took 10.5 s against 0.23 s in float32, 46x
slower, which made a W8A8 run of tiny-sounds 10x slower than FP. So ``auto`` asks this module,
which times both on one small product once per process and answers with a cached bool.
``compute="int8"`` still forces the integer path (for tests and benchmarks).
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch

# (M, K, N) of the probe: big enough that kernel choice, not call overhead, decides; small
# enough that the slow reference path costs ~0.1 s once.
PROBE_SHAPE = (128, 512, 512)


def _best_of(fn, repeats: int = 3) -> float:
    fn()  # warm-up (lazy kernel selection, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@lru_cache(maxsize=1)
def int8_matmul_is_fast() -> bool:
    """True when ``torch._int_mm`` beats a float32 matmul of the same shape here (cached)."""
    m, k, n = PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    a8 = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gen)
    b8 = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=gen)
    a32, b32 = a8.float(), b8.float()
    try:
        t_int = _best_of(lambda: torch._int_mm(a8, b8))
    except RuntimeError:  # no int8 kernel at all on this build / device
        return False
    t_fp = _best_of(lambda: torch.mm(a32, b32))
    return t_int < t_fp
