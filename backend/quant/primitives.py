"""Affine quantization primitives: integer ranges, scale/zero-point choice, (de)quantize.

Notation follows ../shared/METHODS.md: ``q = clamp(round(x / s) + z, qmin, qmax)`` and
``x_hat = (q - z) * s``. Everything is vectorised over a *grouped view* of the tensor of
shape ``(rows, groups, k)`` whose last axis holds the values that share one scale; a
per-tensor, per-channel or per-group scale is just a different view. The only Python
loops are over a handful of candidate clipping ratios in the MSE search, never over
elements.
"""

from __future__ import annotations

import torch

from .errors import QuantError

_EPS = 1e-12


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer code range: signed and restricted (-127..127 for 8 bits) when symmetric,
    so that negation is exact and the int8 matmul path needs no zero point; unsigned
    (0..255) when asymmetric."""
    if symmetric:
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def group_view(w: torch.Tensor, granularity: str, group_size: int, name: str = "") -> torch.Tensor:
    """View a 2-D ``(out, in)`` weight as ``(rows, groups, k)`` for the given granularity.

    ``tensor`` -> ``(1, 1, out*in)``; ``channel`` -> ``(out, 1, in)`` (one scale per output
    channel); ``group`` -> ``(out, in // G, G)`` (one scale per G consecutive input
    channels of each output channel, as in Q-DiT / GPTQ).
    """
    if w.dim() != 2:
        raise QuantError(f"{name or 'tensor'}: expected a 2-D weight, got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    if granularity == "tensor":
        return w.reshape(1, 1, out_f * in_f)
    if granularity == "channel":
        return w.reshape(out_f, 1, in_f)
    if granularity == "group":
        if in_f % group_size:
            raise QuantError(
                f"{name or 'layer'}: group size {group_size} does not divide its {in_f} input "
                "channels; pick a divisor or use per-channel granularity"
            )
        return w.reshape(out_f, in_f // group_size, group_size)
    raise QuantError(f"unknown granularity {granularity!r}")


def qparams_from_range(
    xmin: torch.Tensor, xmax: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map ``[xmin, xmax]`` onto the integer range.

    The range is widened to include 0 so that zero (padding, ReLU/GELU outputs, pruned
    weights) is represented exactly. Returns float32 ``scale`` and ``zero_point`` (an
    integer-valued float tensor) of the same shape as the inputs.
    """
    xmin = torch.clamp(xmin.float(), max=0.0)
    xmax = torch.clamp(xmax.float(), min=0.0)
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        amax = torch.maximum(-xmin, xmax)
        scale = torch.clamp(amax / qmax, min=_EPS)
        zero = torch.zeros_like(scale)
    else:
        scale = torch.clamp((xmax - xmin) / (qmax - qmin), min=_EPS)
        zero = torch.clamp(torch.round(qmin - xmin / scale), qmin, qmax)
    return scale, zero


def quantize(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """Integer codes (int16 tensor, values inside :func:`qrange`)."""
    qmin, qmax = qrange(bits, symmetric)
    return torch.clamp(torch.round(x / scale) + zero, qmin, qmax).to(torch.int16)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``(q - z) * s`` in float32."""
    return (codes.float() - zero) * scale


def fake_quant(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """Quantize then dequantize in float (the reference every integer path must match)."""
    qmin, qmax = qrange(bits, symmetric)
    return (torch.clamp(torch.round(x / scale) + zero, qmin, qmax) - zero) * scale


def _percentile_range(g: torch.Tensor, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower/upper percentiles along the last axis (subsampled above torch.quantile's limit)."""
    k = g.shape[-1]
    limit = 2**24 // max(1, g.shape[0] * g.shape[1])
    if k > limit:
        idx = torch.linspace(0, k - 1, steps=limit).long()
        g = torch.sort(g, dim=-1).values[..., idx]
    q = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0], dtype=g.dtype)
    lo_hi = torch.quantile(g, q, dim=-1, keepdim=True)
    return lo_hi[0], lo_hi[1]


def _mse_range(
    g: torch.Tensor, bits: int, symmetric: bool, grid: int, min_ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipping range minimising the squared quantization error of each group.

    Candidates shrink the min-max range by ratios in ``[min_ratio, 1]``; the error of every
    group is evaluated for each candidate at once, and each group keeps its best ratio.
    """
    gmin = g.amin(dim=-1, keepdim=True)
    gmax = g.amax(dim=-1, keepdim=True)
    best_err = torch.full_like(gmin, float("inf"))
    best_min, best_max = gmin.clone(), gmax.clone()
    for ratio in torch.linspace(min_ratio, 1.0, grid).tolist():
        cmin, cmax = gmin * ratio, gmax * ratio
        s, z = qparams_from_range(cmin, cmax, bits, symmetric)
        err = (fake_quant(g, s, z, bits, symmetric) - g).pow(2).sum(dim=-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_min = torch.where(better, cmin, best_min)
        best_max = torch.where(better, cmax, best_max)
    return best_min, best_max


def choose_qparams(
    g: torch.Tensor,
    bits: int,
    symmetric: bool,
    method: str = "minmax",
    *,
    percentile: float = 99.99,
    grid: int = 40,
    min_ratio: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for each group of a ``(rows, groups, k)`` view.

    ``minmax`` uses the full range; ``percentile`` clips to the given two-sided
    percentile; ``mse`` searches the clipping ratio that minimises the squared error.
    Returned tensors have shape ``(rows, groups, 1)``.
    """
    g = g.float()
    if not torch.isfinite(g).all():
        raise QuantError("tensor contains NaN or inf; cannot choose a quantization scale")
    if method == "minmax":
        lo, hi = g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
    elif method == "percentile":
        lo, hi = _percentile_range(g, percentile)
    elif method == "mse":
        lo, hi = _mse_range(g, bits, symmetric, grid, min_ratio)
    else:
        raise QuantError(f"unknown scale method {method!r}")
    return qparams_from_range(lo, hi, bits, symmetric)
