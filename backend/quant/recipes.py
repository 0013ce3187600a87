"""Named recipes: what a person picks in the app ("W4A8, Q-DiT") as a runnable plan.

A :class:`Recipe` is the user-facing choice (bits, method, the method's settings); the
method modules stay the source of truth for how each idea works. :func:`apply_recipe` runs
a recipe on a denoiser given two callables from the caller — ``calibrate()`` runs the
pipeline's sampling loop on the calibration prompts (recorded through hooks) — so the
library still does no I/O and knows no pipeline.

Methods (``Recipe.method``):

* ``ptq``      plain min-max PTQ: per-channel weights, static per-tensor activations.
* ``rtzs``     RT/ZS (QuaRTZ): 8-bit + leading-zero suppression activations, optional
               residual-truncated weights.
* ``qdit``     Q-DiT: group-wise weights, sample-wise dynamic group activations, optional
               evolutionary group-size search (proxy fitness).
* ``smooth``   audio-DiT PTQ: SmoothQuant migration (static = SQS, dynamic = SQD), optional
               low-rank branch.
* ``mixed``    sensitivity-driven mixed precision under an average-bits budget.
* ``ptq4adm``  PTQ4ADM: coverage-driven calibration set (chosen by the caller's calibration
               callable) + selective (mixed-precision) quantization.
* ``best``     the combination that measured best in bench.methods: Q-DiT dynamic groups +
               smoothing, with mixed precision when a budget is given.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from .apply import quantize
from .calibration import ActivationRecorder, CalibrationRecord
from .capture import CapturedCalls, capture_calls
from .config import QuantConfig
from .errors import QuantError
from .methods.mixed_precision import (
    allocate_bits,
    budget_for_average_bits,
    layer_numel,
    layer_sensitivity,
    mixed_precision_config,
)
from .methods.qdit import SearchConfig, evolutionary_search, proxy_fitness, qdit_config
from .methods.rtzs import rtzs_config
from .report import QuantReport

METHODS = ("ptq", "rtzs", "qdit", "smooth", "mixed", "ptq4adm", "best")
METHOD_TITLES = {
    "ptq": "Plain min-max PTQ",
    "rtzs": "RT/ZS (QuaRTZ)",
    "qdit": "Q-DiT",
    "smooth": "Smoothing (audio-DiT PTQ)",
    "mixed": "Mixed precision",
    "ptq4adm": "PTQ4ADM",
    "best": "Best combination",
}


@dataclass(frozen=True)
class Recipe:
    """One quantization choice as the app and the benchmarks express it."""

    w_bits: int | None = 8
    a_bits: int | None = 8
    method: str = "ptq"
    group_size: int | None = None  # weight (and Q-DiT activation) group; None = per channel
    a_mode: str | None = None  # None: the method's own default
    timestep_buckets: int | None = None
    scale_method: str = "minmax"
    # RT/ZS
    lzs_group: int = 16
    lzs_rounding: str = "nearest"
    residual_bits: int | None = None
    residual_threshold: float = 0.0
    # Q-DiT
    search: bool = False
    search_population: int = 12
    search_generations: int = 4
    search_min_mean_group: float = 64.0
    search_choices: tuple[int, ...] = (16, 32, 64, 128)
    # smoothing / low rank
    smooth_alpha: float | str = 0.5
    lowrank_rank: int = 0
    # mixed precision
    avg_bits: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.w_bits is None and self.a_bits is None:
            raise QuantError("a recipe needs weight bits, activation bits or both")
        if self.method == "rtzs" and self.a_bits is not None and self.a_bits >= 8 and self.residual_bits is None:
            raise QuantError("RT/ZS compresses 8-bit activation codes: pick A4 or A6 (or add a residual stage)")
        if self.method in ("mixed", "ptq4adm") and self.avg_bits is not None and self.w_bits is not None:
            if not self.w_bits <= self.avg_bits <= 32:
                raise QuantError(f"average-bits budget {self.avg_bits} must lie between W{self.w_bits} and 32")

    @property
    def label(self) -> str:
        w = "W16" if self.w_bits is None else f"W{self.w_bits}"
        a = "A16" if self.a_bits is None else f"A{self.a_bits}"
        return f"{w}{a} {METHOD_TITLES[self.method]}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["search_choices"] = list(self.search_choices)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        d = dict(d)
        if "search_choices" in d:
            d["search_choices"] = tuple(d["search_choices"])
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise QuantError(f"unknown recipe settings: {sorted(unknown)}")
        return cls(**d)


def base_config(recipe: Recipe) -> QuantConfig:
    """The :class:`QuantConfig` a recipe starts from (before searches / allocations)."""
    gran = "channel" if recipe.group_size is None else "group"
    cfg = QuantConfig(
        w_bits=recipe.w_bits, a_bits=recipe.a_bits, w_granularity=gran, w_group_size=recipe.group_size or 128,
        a_mode=recipe.a_mode or "static", a_timestep_buckets=recipe.timestep_buckets,
        w_scale_method=recipe.scale_method, a_scale_method=recipe.scale_method,
    )
    m = recipe.method
    if m == "rtzs":
        cfg = rtzs_config(cfg, act_bits=recipe.a_bits if recipe.a_bits and recipe.a_bits < 8 else None,
                          lzs_group=recipe.lzs_group, lzs_rounding=recipe.lzs_rounding,
                          residual_bits=recipe.residual_bits, residual_threshold=recipe.residual_threshold)
    elif m in ("qdit", "best"):
        cfg = qdit_config(cfg.replace(a_mode=recipe.a_mode or "dynamic"), recipe.group_size or 64)
        if m == "best":
            cfg = cfg.replace(smooth_alpha=recipe.smooth_alpha, lowrank_rank=recipe.lowrank_rank)
    elif m == "smooth":
        cfg = cfg.replace(smooth_alpha=recipe.smooth_alpha, lowrank_rank=recipe.lowrank_rank)
    return cfg


@dataclass
class RecipeResult:
    """The quantized denoiser's report plus what the recipe's procedures found."""

    report: QuantReport
    config: QuantConfig
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def apply_recipe(
    denoiser: nn.Module,
    recipe: Recipe,
    calibrate: Callable[[], Any] | None,
    *,
    record: CalibrationRecord | None = None,
    captured: CapturedCalls | None = None,
    hook_into: nn.Module | None = None,
) -> RecipeResult:
    """Quantize ``denoiser`` in place by ``recipe``.

    ``calibrate()`` runs the sampling loop on the calibration prompts; it is called at most
    twice (activation statistics, and denoiser calls for sensitivity / search) and not at
    all when ``record`` / ``captured`` are given (e.g. reused across requests). The hooks go
    on ``hook_into`` — the FP module the pipeline actually calls, when ``denoiser`` is a copy
    of it (layer names are the same, so statistics transfer).
    """
    t0 = time.perf_counter()
    hooked = hook_into if hook_into is not None else denoiser
    cfg = base_config(recipe)
    details: dict[str, Any] = {}
    needs_calls = recipe.search or (recipe.method in ("mixed", "ptq4adm", "best") and recipe.avg_bits)
    if needs_calls and captured is None:
        if calibrate is None:
            raise QuantError(f"{recipe.label} needs a calibration run")
        captured = capture_calls(hooked, calibrate)
    if recipe.method == "qdit" and recipe.search:
        search = SearchConfig(choices=recipe.search_choices, population=recipe.search_population,
                              generations=recipe.search_generations, parents=max(2, recipe.search_population // 3),
                              crossovers=max(1, recipe.search_population // 3),
                              mutations=max(1, recipe.search_population // 3),
                              min_mean_group=recipe.search_min_mean_group, seed=recipe.seed)
        result = evolutionary_search(denoiser, cfg, proxy_fitness(captured.subset(2)), search)
        cfg = result.config
        details["search"] = {"genome": dict(zip(result.layers, result.genome)), "fitness": result.fitness,
                             "evaluations": result.state.evaluations, "seconds": result.state.seconds,
                             "history": result.state.history}
    if recipe.method in ("mixed", "ptq4adm", "best") and recipe.avg_bits and recipe.w_bits is not None:
        probe_bits = tuple(sorted({recipe.w_bits, 8} - {None}))
        sens = layer_sensitivity(denoiser, cfg, captured.subset(2), bits=probe_bits)
        numel = layer_numel(denoiser, list(sens))
        alloc = allocate_bits(sens, numel, budget_for_average_bits(numel, recipe.avg_bits),
                              choices=tuple(sorted(set(probe_bits) | {32})))
        cfg = mixed_precision_config(cfg, alloc)
        details["mixed_precision"] = {"bits": alloc.bits, "bytes": alloc.bytes, "budget_bytes": alloc.budget_bytes,
                                      "sensitivity": {n: {str(b): e for b, e in v.items()} for n, v in sens.items()}}
    needs_record = (cfg.a_bits is not None and cfg.a_mode == "static") or cfg.smooth_alpha is not None
    if needs_record and record is None:
        if calibrate is None:
            raise QuantError(f"{recipe.label} needs a calibration run (static activations / smoothing)")
        keep = 256 if cfg.smooth_alpha == "search" else 0
        rec = ActivationRecorder(hooked, keep_rows=keep)
        record = rec.run(calibrate)
    report = quantize(denoiser, cfg, calibration=record)
    return RecipeResult(report=report, config=cfg, seconds=time.perf_counter() - t0, details=details)


def quantized_copy(denoiser: nn.Module, recipe: Recipe, calibrate: Callable[[], Any] | None, **kw: Any):
    """Like :func:`apply_recipe` on a deep copy; returns ``(copy, result)``."""
    q = copy.deepcopy(denoiser)
    return q, apply_recipe(q, recipe, calibrate, hook_into=denoiser, **kw)
