"""Activation statistics recorded per layer and per denoising timestep.

:class:`ActivationRecorder` puts forward hooks on a denoiser's Linear / Conv2d layers (or
their quantized wrappers) and, while any callable runs the sampling loop, records for
every (layer, timestep) pair: count, min, max, abs-max, mean and variance, per-channel
min / max / abs-max, a fixed-bin histogram over a symmetric range that doubles when
needed (counts are merged exactly), and a bounded random sample of values from which the
requested percentiles are computed. The result, a :class:`CalibrationRecord`, is a plain
``layer -> timestep -> ActStats`` mapping: static activation scales are chosen from it,
smoothing and calibration-set methods read it, and the app draws histograms from it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import QuantError
from .timestep import attach_timestep_tracker, timestep_key

DEFAULT_PERCENTILES = (0.01, 0.1, 1.0, 50.0, 99.0, 99.9, 99.99)


def channels_last(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer input viewed as ``(rows, channels)``: conv inputs move channel dim 1 last."""
    if isinstance(module, nn.Conv2d) or getattr(module, "in_channels", None) is not None:
        if x.dim() == 4:
            x = x.movedim(1, -1)
    return x.reshape(-1, x.shape[-1])


@dataclass
class ActStats:
    """Statistics of one layer's input at one timestep (merged over all calls)."""

    count: int = 0
    calls: int = 0
    min: float = float("inf")
    max: float = float("-inf")
    absmax: float = 0.0
    sum: float = 0.0
    sumsq: float = 0.0
    ch_min: torch.Tensor | None = None
    ch_max: torch.Tensor | None = None
    ch_absmax: torch.Tensor | None = None
    hist: torch.Tensor | None = None
    hist_range: float = 0.0
    samples: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    percentiles: dict[float, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return self.sum / max(self.count, 1)

    @property
    def std(self) -> float:
        var = self.sumsq / max(self.count, 1) - self.mean**2
        return max(var, 0.0) ** 0.5

    def hist_edges(self) -> torch.Tensor:
        """Bin edges of :attr:`hist` (``bins + 1`` values over ``[-range, range]``)."""
        return torch.linspace(-self.hist_range, self.hist_range, self.hist.numel() + 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-channel vectors and histogram as lists, no samples)."""
        out: dict[str, Any] = {
            "count": self.count, "calls": self.calls, "min": self.min, "max": self.max,
            "absmax": self.absmax, "mean": self.mean, "std": self.std,
            "percentiles": {str(k): v for k, v in self.percentiles.items()},
            "hist_range": self.hist_range,
        }
        if self.hist is not None:
            out["hist"] = self.hist.tolist()
        for name in ("ch_min", "ch_max", "ch_absmax"):
            t = getattr(self, name)
            out[name] = None if t is None else t.tolist()
        return out


def _next_pow2(v: float) -> float:
    v = max(v, 1e-8)
    return float(2.0 ** torch.ceil(torch.log2(torch.tensor(v))).item())


def _doublings(small: float, big: float) -> int:
    """How many doublings take a power-of-two range ``small`` to ``big``."""
    return round(math.log2(big / small))


def _grow_hist(hist: torch.Tensor, times: int) -> torch.Tensor:
    """Re-bin a histogram over [-R, R] to [-2^times R, 2^times R] exactly (bins % 4 == 0)."""
    n = hist.numel()
    for _ in range(times):
        merged = hist.view(-1, 2).sum(dim=1)
        hist = torch.zeros_like(hist)
        hist[n // 4 : n // 4 + n // 2] = merged
    return hist


def merge_stats(items: Iterable[ActStats], max_samples: int = 4096, seed: int = 0) -> ActStats:
    """Merge statistics of several timesteps (e.g. one timestep bucket) into one."""
    items = [s for s in items if s.count]
    if not items:
        raise QuantError("no statistics to merge")
    out = ActStats()
    rng = torch.Generator().manual_seed(seed)
    for s in items:
        out.count += s.count
        out.calls += s.calls
        out.min, out.max = min(out.min, s.min), max(out.max, s.max)
        out.absmax = max(out.absmax, s.absmax)
        out.sum += s.sum
        out.sumsq += s.sumsq
        if s.ch_min is not None:
            out.ch_min = s.ch_min.clone() if out.ch_min is None else torch.minimum(out.ch_min, s.ch_min)
            out.ch_max = s.ch_max.clone() if out.ch_max is None else torch.maximum(out.ch_max, s.ch_max)
            out.ch_absmax = (
                s.ch_absmax.clone() if out.ch_absmax is None else torch.maximum(out.ch_absmax, s.ch_absmax)
            )
        if s.hist is not None:
            h, r = s.hist.clone(), s.hist_range
            if out.hist is None:
                out.hist, out.hist_range = h, r
            else:
                big = max(r, out.hist_range)
                if out.hist_range < big:
                    out.hist = _grow_hist(out.hist, _doublings(out.hist_range, big))
                if r < big:
                    h = _grow_hist(h, _doublings(r, big))
                out.hist, out.hist_range = out.hist + h, big
        if s.samples is not None:
            out.samples = s.samples if out.samples is None else torch.cat([out.samples, s.samples])
        if s.rows is not None:
            out.rows = s.rows if out.rows is None else torch.cat([out.rows, s.rows])
    if out.samples is not None and out.samples.numel() > max_samples:
        idx = torch.randperm(out.samples.numel(), generator=rng)[:max_samples]
        out.samples = out.samples[idx]
    return out


@dataclass
class CalibrationRecord:
    """``layers[layer_name][timestep_key] -> ActStats`` plus the settings that made it."""

    layers: dict[str, dict[int, ActStats]] = field(default_factory=dict)
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    bins: int = 256

    def timesteps(self) -> list[int]:
        """All timestep keys seen, sorted descending (sampling order)."""
        keys = {t for per_t in self.layers.values() for t in per_t}
        return sorted(keys, reverse=True)

    def merged(self, layer: str, timesteps: Iterable[int] | None = None) -> ActStats:
        """One layer's statistics merged over the given timesteps (default: all)."""
        if layer not in self.layers:
            raise QuantError(f"{layer}: no calibration statistics were recorded for this layer")
        per_t = self.layers[layer]
        keys = per_t.keys() if timesteps is None else [t for t in timesteps if t in per_t]
        stats = merge_stats([per_t[t] for t in keys])
        finalize_percentiles(stats, self.percentiles)
        return stats

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{layer: {timestep: summary}}``."""
        return {
            layer: {str(t): s.to_dict() for t, s in per_t.items()} for layer, per_t in self.layers.items()
        }


def finalize_percentiles(stats: ActStats, percentiles: Iterable[float]) -> None:
    """Fill ``stats.percentiles`` from its value sample."""
    if stats.samples is None or stats.samples.numel() == 0:
        return
    qs = torch.tensor([p / 100.0 for p in percentiles])
    vals = torch.quantile(stats.samples.float(), qs)
    stats.percentiles = {float(p): float(v) for p, v in zip(percentiles, vals)}


class ActivationRecorder:
    """Records input statistics of chosen layers while a sampling loop runs.

    Use as a context manager around any callable that drives the denoiser (a diffusers
    pipeline call, a hand-written loop)::

        rec = ActivationRecorder(pipe.transformer)
        with rec:
            pipe(prompt, num_inference_steps=25)
        record = rec.record

    NaN or inf in a layer's input raises :class:`QuantError` naming the layer and the
    timestep (the sampling loop stops there).
    """

    def __init__(
        self,
        root: nn.Module,
        layer_names: Iterable[str] | None = None,
        *,
        include: Callable[[str, nn.Module], bool] | None = None,
        percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
        bins: int = 256,
        max_samples: int = 4096,
        per_channel: bool = True,
        keep_rows: int = 0,
        seed: int = 0,
    ) -> None:
        if bins % 4:
            raise QuantError("histogram bins must be a multiple of 4")
        self.root = root
        self.bins, self.max_samples, self.per_channel = bins, max_samples, per_channel
        self.keep_rows = keep_rows
        self.record = CalibrationRecord(percentiles=tuple(percentiles), bins=bins)
        self._rng = torch.Generator().manual_seed(seed)
        self._handles: list[Any] = []
        self.tracker = attach_timestep_tracker(root)
        names = None if layer_names is None else set(layer_names)
        self.targets: dict[str, nn.Module] = {}
        for name, mod in root.named_modules():
            if names is not None:
                if name in names:
                    self.targets[name] = mod
            elif (include or default_layer_filter)(name, mod):
                self.targets[name] = mod
        if names is not None and (missing := names - set(self.targets)):
            raise QuantError(f"layers not found in the module: {sorted(missing)[:5]}")
        if not self.targets:
            raise QuantError("no layer to record: the module has no nn.Linear / nn.Conv2d layer")

    def __enter__(self) -> ActivationRecorder:
        for name, mod in self.targets.items():
            self._handles.append(mod.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, fn: Callable[[], Any]) -> CalibrationRecord:
        """Run ``fn`` with the hooks installed and return the record."""
        with self:
            fn()
        return self.record

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            self.observe(name, module, args[0])

        return hook

    @torch.no_grad()
    def observe(self, name: str, module: nn.Module, x: torch.Tensor) -> None:
        """Merge one call's input into the (layer, current timestep) statistics."""
        t = timestep_key(self.tracker.t)
        x2 = channels_last(module, x.detach()).float()
        # min/max propagate NaN and reach inf, so finite extremes mean a finite tensor: no
        # separate isfinite pass over the activations (this hook runs on every layer call).
        if self.per_channel:
            cmin, cmax = torch.aminmax(x2, dim=0)
            lo, hi = float(cmin.min()), float(cmax.max())
        else:
            lo_t, hi_t = torch.aminmax(x2)
            lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise QuantError(
                f"{name}: calibration input contains NaN or inf at timestep {t}; "
                "check the prompts / latents that produced it"
            )
        per_t = self.record.layers.setdefault(name, {})
        s = per_t.setdefault(t, ActStats())
        flat = x2.reshape(-1)
        s.count += flat.numel()
        s.calls += 1
        s.min, s.max = min(s.min, lo), max(s.max, hi)
        s.absmax = max(s.absmax, abs(lo), abs(hi))
        # per-channel partial sums in float32, the total in float64: exact enough, no
        # float64 copy of the activations
        s.sum += float(x2.sum(0).double().sum())
        s.sumsq += float((x2 * x2).sum(0).double().sum())
        if self.per_channel:
            camax = torch.maximum(-cmin, cmax)
            if s.ch_min is None:
                s.ch_min, s.ch_max, s.ch_absmax = cmin, cmax, camax
            else:
                s.ch_min = torch.minimum(s.ch_min, cmin)
                s.ch_max = torch.maximum(s.ch_max, cmax)
                s.ch_absmax = torch.maximum(s.ch_absmax, camax)
        need = _next_pow2(s.absmax)
        if s.hist is None:
            s.hist, s.hist_range = torch.zeros(self.bins, dtype=torch.int64), need
        elif need > s.hist_range:
            s.hist, s.hist_range = _grow_hist(s.hist, _doublings(s.hist_range, need)), need
        s.hist += torch.histc(flat, bins=self.bins, min=-s.hist_range, max=s.hist_range).to(torch.int64)
        take = min(flat.numel(), self.max_samples)
        idx = torch.randint(0, flat.numel(), (take,), generator=self._rng)
        new = flat[idx]
        s.samples = new if s.samples is None else torch.cat([s.samples, new])
        if s.samples.numel() > self.max_samples:
            keep = torch.randperm(s.samples.numel(), generator=self._rng)[: self.max_samples]
            s.samples = s.samples[keep]
        if self.keep_rows:
            pick = torch.randint(0, x2.shape[0], (min(self.keep_rows, x2.shape[0]),), generator=self._rng)
            s.rows = x2[pick] if s.rows is None else torch.cat([s.rows, x2[pick]])
            if s.rows.shape[0] > self.keep_rows:
                keep = torch.randperm(s.rows.shape[0], generator=self._rng)[: self.keep_rows]
                s.rows = s.rows[keep]


def default_layer_filter(name: str, module: nn.Module) -> bool:
    """Record every Linear / Conv2d (plain or already quantized)."""
    from .layers import QUANT_LAYER_TYPES

    return isinstance(module, (nn.Linear, nn.Conv2d, *QUANT_LAYER_TYPES))


def pattern_filter(patterns: Iterable[str]) -> Callable[[str, nn.Module], bool]:
    """A layer filter matching qualified names against fnmatch patterns."""
    pats = tuple(patterns)

    def f(name: str, module: nn.Module) -> bool:
        return default_layer_filter(name, module) and any(fnmatch.fnmatch(name, p) for p in pats)

    return f


def calibrate(root: nn.Module, run: Callable[[], Any], **recorder_kwargs: Any) -> CalibrationRecord:
    """Record activation statistics of ``root``'s layers while ``run()`` samples."""
    return ActivationRecorder(root, **recorder_kwargs).run(run)
