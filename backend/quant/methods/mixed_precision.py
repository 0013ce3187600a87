"""Sensitivity analysis and mixed-precision bit allocation under a size budget.

From PTQ for audio diffusion transformers (Khandelwal & Fuentes, arXiv 2510.00313; the
seed summary's "sensitivity-driven mixed precision", kept because it is standard and
useful) and PTQ4ADM's "selective quantization" (arXiv 2409.13894, Sec. 3): layers differ in
how much quantizing them hurts, so sensitive layers keep more bits (or FP) and robust ones
take fewer, under a budget on the stored size.

* :func:`layer_sensitivity` quantizes one layer at a time (all others FP) at each candidate
  width and measures the denoiser's relative output error on captured calibration calls.
* :func:`allocate_bits` starts every layer at the lowest width and greedily upgrades the
  layer with the largest error reduction per extra byte until the budget is spent.
* :func:`mixed_precision_config` turns the allocation into per-layer overrides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from ..apply import quantizable_layers, quantize, resolve_recipe
from ..capture import CapturedCalls, output_error
from ..config import LayerOverride, QuantConfig
from ..errors import QuantError

FP = 32  # pseudo bit width meaning "keep in FP32"


@dataclass
class Allocation:
    """Chosen bits per layer and what they cost."""

    bits: dict[str, int]
    bytes: int
    budget_bytes: int
    predicted_error: float
    steps: list[tuple[str, int, int]] = field(default_factory=list)  # (layer, from, to)


def _weight_bytes(numel: int, bits: int) -> float:
    return numel * 4 if bits == FP else numel * bits / 8


def layer_sensitivity(
    denoiser: nn.Module,
    base: QuantConfig,
    captured: CapturedCalls,
    bits: tuple[int, ...] = (4, 8),
    layers: list[str] | None = None,
) -> dict[str, dict[int, float]]:
    """Relative output error when only ``layer`` is quantized to each width in ``bits``.

    Weight-only probing (activations stay FP): it isolates each layer's weight sensitivity
    and needs no activation calibration. Returns ``{layer: {bits: error}}``.
    """
    names = layers or [n for n in quantizable_layers(denoiser, base) if resolve_recipe(n, base)[0] is not None]
    if not names:
        raise QuantError("no quantizable layer to probe")
    out: dict[str, dict[int, float]] = {}
    for name in names:
        out[name] = {}
        for b in bits:
            probe = copy.deepcopy(denoiser)
            cfg = base.replace(a_bits=None, skip=("*",), overrides=((name, LayerOverride(w_bits=b)),),
                               residual_bits=None, smooth_alpha=None, lowrank_rank=0, act_lzs_group=None)
            quantize(probe, cfg)
            out[name][b] = output_error(probe, captured)
    return out


def allocate_bits(
    sensitivity: dict[str, dict[int, float]],
    numel: dict[str, int],
    budget_bytes: float,
    choices: tuple[int, ...] = (4, 8, FP),
) -> Allocation:
    """Greedy allocation: cheapest width everywhere, then upgrade by error saved per byte.

    A width missing from a layer's sensitivity is treated as error 0 for FP and skipped
    otherwise. Raises :class:`QuantError` if even the cheapest allocation exceeds the budget.
    """
    choices = tuple(sorted(choices))
    bits = {name: choices[0] for name in sensitivity}
    total = sum(_weight_bytes(numel[n], b) for n, b in bits.items())
    if total > budget_bytes:
        raise QuantError(
            f"budget {budget_bytes / 2**20:.3f} MB is below the all-{choices[0]}-bit size {total / 2**20:.3f} MB"
        )

    def err(name: str, b: int) -> float | None:
        if b == FP:
            return 0.0
        return sensitivity[name].get(b)

    steps = []
    while True:
        best = None
        for name, b in bits.items():
            higher = [c for c in choices if c > b and err(name, c) is not None]
            if not higher:
                continue
            nxt = higher[0]
            extra = _weight_bytes(numel[name], nxt) - _weight_bytes(numel[name], b)
            if total + extra > budget_bytes:
                continue
            gain = (err(name, b) or 0.0) - err(name, nxt)
            score = gain / max(extra, 1e-9)
            if best is None or score > best[0]:
                best = (score, name, nxt, extra)
        if best is None or best[0] <= 0:
            break
        _, name, nxt, extra = best
        steps.append((name, bits[name], nxt))
        bits[name], total = nxt, total + extra
    predicted = sum(err(n, b) or 0.0 for n, b in bits.items())
    return Allocation(bits=bits, bytes=int(total), budget_bytes=int(budget_bytes), predicted_error=predicted,
                      steps=steps)


def mixed_precision_config(base: QuantConfig, allocation: Allocation) -> QuantConfig:
    """``base`` plus one override per layer with the allocated width (FP = skip)."""
    overrides = list(base.overrides)
    for name, b in allocation.bits.items():
        if b == FP:
            overrides.append((name, LayerOverride(skip=True, reason="mixed precision: sensitive, kept FP")))
        elif b != base.w_bits:
            overrides.append((name, LayerOverride(w_bits=b, reason=f"mixed precision: W{b}")))
    return base.replace(overrides=tuple(overrides))


def budget_for_average_bits(numel: dict[str, int], avg_bits: float) -> float:
    """Bytes of all probed layers at ``avg_bits`` bits per weight."""
    return sum(n * avg_bits / 8 for n in numel.values())


def layer_numel(denoiser: nn.Module, names: list[str]) -> dict[str, int]:
    """Weight element counts of the named layers."""
    mods = dict(denoiser.named_modules())
    return {n: mods[n].weight.numel() for n in names}
