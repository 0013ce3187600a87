"""Per-layer, per-timestep activation telemetry of an FP run and a quantized run.

The app shows a researcher *where* activation quantization hurts: which layer, at which
denoising step, how the input distribution moved, how much of it falls outside the
quantizer's range. Two sampling runs with the same prompts and seeds are recorded: the FP
denoiser and its quantized copy. Histograms come from
:class:`backend.quant.ActivationRecorder` (it hooks plain and quantized layers alike);
for quantized layers an extra forward pre-hook calls the layer's own ``act.qparams`` and
``act(x)`` so the error and the clipped fraction are those of the quantizer that actually
ran, at the timestep bucket that actually ran.

Everything lands in :class:`Telemetry`, a dense ``layers x timesteps`` set of numpy
arrays (``nan`` where a pair was not seen) that saves to one ``.npz`` plus one ``.json``.
FP and quantized histograms of the same (layer, timestep) share one power-of-two range,
so they overlay bin for bin; re-binning is by exact merging of counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from backend.quant import ActivationRecorder, CalibrationRecord
from backend.quant.calibration import DEFAULT_PERCENTILES, finalize_percentiles
from backend.quant.errors import QuantError
from backend.quant.layers import QUANT_LAYER_TYPES
from backend.quant.primitives import qrange

#: Histogram bins recorded during the runs (ActivationRecorder needs a multiple of 4).
RECORD_BINS = 256
#: Bins kept in the saved telemetry (an exact merge of the recorded ones).
DEFAULT_BINS = 128
#: At most this many layers are kept: a DiT-XL has ~700 Linear layers, and a page that
#: draws 700 x 50 histograms is neither small nor readable. Layers are picked evenly
#: spaced along the module order (first and last always kept) so every depth is shown.
DEFAULT_MAX_LAYERS = 64

SCALARS = ("count", "min", "max", "absmax", "mean", "std")
Q_METRICS = ("quant_error", "clipped_fraction", "clip_lo", "clip_hi")


@dataclass
class _QAccum:
    """Running sums of one quantized layer at one timestep."""

    err_num: float = 0.0
    err_den: float = 0.0
    clipped: int = 0
    total: int = 0
    lo_sum: float = 0.0
    hi_sum: float = 0.0
    lo_min: float = math.inf
    hi_max: float = -math.inf
    calls: int = 0


@torch.no_grad()
def quant_stats(act: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Error and clipping of one activation quantizer on one channels-last input.

    Returns the sums the telemetry accumulates: ``err_num = ||x - Q(x)||^2``,
    ``err_den = ||x||^2``, ``clipped`` (count of values the quantizer's clamp changes:
    ``round(x/s) + z`` outside ``[qmin, qmax]``, i.e. more than half a step beyond the
    representable range ``[(qmin - z) s, (qmax - z) s]`` — values within half a step of the
    edge round onto the edge level like any other value and are not counted), ``total``,
    and the range (envelope min / max, and means over samples or groups).
    """
    s, z = act.qparams(x)
    qmin, qmax = qrange(act.bits, act.symmetric)
    xg = act._grouped(x.float())
    lo, hi = (qmin - z) * s, (qmax - z) * s
    xq = act(x).float()
    xf = x.float()
    code = torch.round(xg / s) + z
    clipped = int(((code < qmin) | (code > qmax)).sum())
    return {
        "err_num": float((xf - xq).double().pow(2).sum()),
        "err_den": float(xf.double().pow(2).sum()),
        "clipped": clipped,
        "total": xg.numel(),
        "lo_mean": float(lo.float().mean()),
        "hi_mean": float(hi.float().mean()),
        "lo_min": float(lo.min()),
        "hi_max": float(hi.max()),
    }


def _act_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the layer's activation quantizer sees: conv inputs channels-last, Linear inputs
    divided by the smoothing factors when the layer has them."""
    if x.dim() == 4 and hasattr(module, "in_channels"):
        return x.movedim(1, -1)
    if getattr(module, "smooth", None) is not None:
        return x / module.smooth
    return x


class QuantErrorRecorder:
    """Forward pre-hooks on quantized layers accumulating :func:`quant_stats` per timestep."""

    def __init__(self, modules: dict[str, nn.Module], tracker: Any) -> None:
        self.modules, self.tracker = modules, tracker
        self.acc: dict[str, dict[int, _QAccum]] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> QuantErrorRecorder:
        for name, mod in self.modules.items():
            self._handles.append(mod.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable:
        from backend.quant.timestep import timestep_key

        def hook(module: nn.Module, args: tuple) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            st = quant_stats(module.act, _act_input(module, args[0].detach()))
            a = self.acc.setdefault(name, {}).setdefault(timestep_key(self.tracker.t), _QAccum())
            a.err_num += st["err_num"]
            a.err_den += st["err_den"]
            a.clipped += st["clipped"]
            a.total += st["total"]
            a.lo_sum += st["lo_mean"]
            a.hi_sum += st["hi_mean"]
            a.lo_min = min(a.lo_min, st["lo_min"])
            a.hi_max = max(a.hi_max, st["hi_max"])
            a.calls += 1

        return hook


def _grow(hist: np.ndarray, times: int) -> np.ndarray:
    """Re-bin a histogram over [-R, R] onto [-2^times R, 2^times R] exactly."""
    n = hist.shape[-1]
    for _ in range(times):
        merged = hist.reshape(*hist.shape[:-1], n // 2, 2).sum(-1)
        hist = np.zeros_like(hist)
        hist[..., n // 4 : n // 4 + n // 2] = merged
    return hist


def downsample(hist: np.ndarray, bins: int) -> np.ndarray:
    """Merge adjacent bins exactly down to ``bins`` (which must divide the bin count)."""
    n = hist.shape[-1]
    if n % bins:
        raise QuantError(f"{bins} bins do not divide {n} recorded bins")
    return hist.reshape(*hist.shape[:-1], bins, n // bins).sum(-1)


def pick_layers(names: list[str], max_layers: int) -> list[str]:
    """At most ``max_layers`` names evenly spaced along ``names`` (first and last kept)."""
    if len(names) <= max_layers:
        return list(names)
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, max_layers)).astype(int))
    return [names[i] for i in idx]


@dataclass
class Telemetry:
    """Dense ``layers x timesteps`` telemetry of an FP run (``fp``) and a quantized run (``q``).

    ``hist[run]`` is ``(L, T, bins)`` int64 counts over ``[-hist_range, hist_range]``
    (``hist_range`` ``(L, T)``, shared by both runs); ``stats[run][name]`` is ``(L, T)``
    float for ``count/min/max/absmax/mean/std``; ``percentiles[run]`` is ``(L, T, P)``.
    ``qstats[name]`` (quantized run only) holds ``quant_error`` (||x-Q(x)||^2/||x||^2),
    ``clipped_fraction``, ``clip_lo``/``clip_hi`` (static: the range at that timestep,
    envelope over channel groups; dynamic: mean over calls and samples). ``nan`` = not seen.
    ``layer_info`` per layer: ``act`` ("static" / "dynamic" / "none"), ``levels``,
    ``grid_exact`` (one scale per tensor: the levels are evenly spaced in the clip range),
    ``smoothed`` (the clip range is in the smoothed domain), ``recipe``.
    """

    layers: list[str]
    timesteps: list[int]
    bins: int
    hist_range: np.ndarray
    hist: dict[str, np.ndarray]
    stats: dict[str, dict[str, np.ndarray]]
    percentiles: dict[str, np.ndarray]
    percentile_levels: list[float]
    qstats: dict[str, np.ndarray]
    layer_info: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- views ---------------------------------------------------------------------------
    def edges(self, layer: str, t: int) -> np.ndarray:
        """Bin edges (``bins + 1``) of the (layer, timestep) histograms of both runs."""
        r = float(self.hist_range[self.layers.index(layer), self.timesteps.index(t)])
        return np.linspace(-r, r, self.bins + 1)

    def entry(self, layer: str, t: int) -> dict[str, Any]:
        """Everything about one (layer, timestep) as plain Python values."""
        i, j = self.layers.index(layer), self.timesteps.index(t)
        out: dict[str, Any] = {"edges": self.edges(layer, t).tolist()}
        for run in ("fp", "q"):
            out[run] = {k: float(v[i, j]) for k, v in self.stats[run].items()}
            out[run]["hist"] = self.hist[run][i, j].tolist()
            out[run]["percentiles"] = dict(
                zip(map(str, self.percentile_levels), self.percentiles[run][i, j].tolist())
            )
        out.update({k: float(v[i, j]) for k, v in self.qstats.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{layer: {timestep: entry}}`` (JSON-ready; large — prefer :meth:`save`)."""
        return {
            layer: {str(t): self.entry(layer, t) for t in self.timesteps} for layer in self.layers
        }

    # -- storage -------------------------------------------------------------------------
    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.npz`` (arrays) and ``<stem>.json`` (names, layer info, meta)."""
        stem = Path(stem)
        arrays: dict[str, np.ndarray] = {"hist_range": self.hist_range}
        for run in ("fp", "q"):
            arrays[f"{run}_hist"] = self.hist[run].astype(np.int64)
            arrays[f"{run}_percentiles"] = self.percentiles[run]
            for k, v in self.stats[run].items():
                arrays[f"{run}_{k}"] = v
        for k, v in self.qstats.items():
            arrays[f"q_{k}"] = v
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        np.savez_compressed(npz, **arrays)
        js.write_text(json.dumps({
            "layers": self.layers, "timesteps": self.timesteps, "bins": self.bins,
            "percentile_levels": self.percentile_levels, "layer_info": self.layer_info,
            "meta": self.meta,
        }, indent=1))
        return npz, js

    @classmethod
    def load(cls, stem: str | Path) -> Telemetry:
        """Read what :meth:`save` wrote."""
        stem = Path(stem)
        head = json.loads(stem.with_suffix(".json").read_text())
        with np.load(stem.with_suffix(".npz")) as z:
            a = {k: z[k] for k in z.files}
        return cls(
            layers=head["layers"], timesteps=head["timesteps"], bins=head["bins"],
            hist_range=a["hist_range"],
            hist={r: a[f"{r}_hist"] for r in ("fp", "q")},
            stats={r: {k: a[f"{r}_{k}"] for k in SCALARS} for r in ("fp", "q")},
            percentiles={r: a[f"{r}_percentiles"] for r in ("fp", "q")},
            percentile_levels=head["percentile_levels"],
            qstats={k: a[f"q_{k}"] for k in Q_METRICS},
            layer_info=head["layer_info"], meta=head["meta"],
        )


def _layer_info(mod: nn.Module | None) -> dict[str, Any]:
    act = getattr(mod, "act", None)
    if act is None:
        return {"act": "none", "levels": 0, "grid_exact": False, "smoothed": False,
                "recipe": "" if mod is None else type(mod).__name__}
    qmin, qmax = qrange(act.bits, act.symmetric)
    return {
        "act": act.mode, "levels": qmax - qmin + 1,
        "grid_exact": act.mode == "static" and act.granularity == "tensor"
        and not hasattr(act, "lzs_group"),
        "smoothed": getattr(mod, "smooth", None) is not None,
        "recipe": f"{type(mod).__name__}: {act.extra_repr()}",
    }


def record_run(
    model: nn.Module, run: Callable[[nn.Module], Any], layers: list[str], quantized: bool,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
) -> tuple[CalibrationRecord, dict[str, dict[int, _QAccum]]]:
    """Run ``run(model)`` once with histogram hooks (and, for a quantized model, the error
    hooks on its quantized layers with an activation quantizer)."""
    rec = ActivationRecorder(model, layers, bins=RECORD_BINS, percentiles=percentiles,
                             per_channel=False)
    mods = dict(model.named_modules())
    qmods = {n: mods[n] for n in layers
             if quantized and isinstance(mods[n], QUANT_LAYER_TYPES) and mods[n].act is not None}
    qrec = QuantErrorRecorder(qmods, rec.tracker)
    with torch.no_grad(), rec, qrec:
        run(model)
    return rec.record, qrec.acc


def capture_telemetry(
    fp_model: nn.Module,
    q_model: nn.Module,
    run: Callable[[nn.Module], Any],
    *,
    layers: list[str] | None = None,
    max_layers: int = DEFAULT_MAX_LAYERS,
    bins: int = DEFAULT_BINS,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
    meta: dict[str, Any] | None = None,
) -> Telemetry:
    """Record ``run(fp_model)`` then ``run(q_model)`` (same prompts and seeds: ``run`` must
    seed its own generators) and build the :class:`Telemetry`.

    ``layers`` defaults to the quantized layers of ``q_model`` in module order, capped to
    ``max_layers`` by :func:`pick_layers`.
    """
    if RECORD_BINS % bins or bins % 4:
        raise QuantError(f"bins must divide {RECORD_BINS} and be a multiple of 4, got {bins}")
    qmods = dict(q_model.named_modules())
    if layers is None:
        layers = [n for n, m in qmods.items() if isinstance(m, QUANT_LAYER_TYPES)]
        if not layers:
            raise QuantError("the quantized model has no quantized layer to record")
        layers = pick_layers(layers, max_layers)
    fp_rec, _ = record_run(fp_model, run, layers, False, percentiles)
    q_rec, qacc = record_run(q_model, run, layers, True, percentiles)
    timesteps = sorted(set(fp_rec.timesteps()) | set(q_rec.timesteps()), reverse=True)
    L, T, P = len(layers), len(timesteps), len(percentiles)
    hist = {r: np.zeros((L, T, bins), np.int64) for r in ("fp", "q")}
    rng = np.zeros((L, T))
    stats = {r: {k: np.full((L, T), np.nan) for k in SCALARS} for r in ("fp", "q")}
    pct = {r: np.full((L, T, P), np.nan) for r in ("fp", "q")}
    qst = {k: np.full((L, T), np.nan) for k in Q_METRICS}
    for i, layer in enumerate(layers):
        for j, t in enumerate(timesteps):
            got = {}
            for r, record in (("fp", fp_rec), ("q", q_rec)):
                s = record.layers.get(layer, {}).get(t)
                if s is None or not s.count:
                    continue
                finalize_percentiles(s, percentiles)
                got[r] = s
                for k in SCALARS:
                    stats[r][k][i, j] = float(getattr(s, k))
                pct[r][i, j] = [s.percentiles.get(float(p), np.nan) for p in percentiles]
            if got:
                big = max(s.hist_range for s in got.values())
                rng[i, j] = big
                for r, s in got.items():
                    h = downsample(s.hist.numpy().astype(np.int64), bins)
                    hist[r][i, j] = _grow(h, round(math.log2(big / s.hist_range)))
            a = qacc.get(layer, {}).get(t)
            if a is not None and a.total:
                qst["quant_error"][i, j] = a.err_num / max(a.err_den, 1e-30)
                qst["clipped_fraction"][i, j] = a.clipped / a.total
                info_static = getattr(qmods[layer].act, "mode", "") == "static"
                qst["clip_lo"][i, j] = a.lo_min if info_static else a.lo_sum / a.calls
                qst["clip_hi"][i, j] = a.hi_max if info_static else a.hi_sum / a.calls
    return Telemetry(
        layers=list(layers), timesteps=timesteps, bins=bins, hist_range=rng, hist=hist,
        stats=stats, percentiles=pct, percentile_levels=[float(p) for p in percentiles],
        qstats=qst, layer_info=[_layer_info(qmods.get(n)) for n in layers], meta=dict(meta or {}),
    )
