"""Outlier smoothing — SmoothQuant migration as used by PTQ for audio diffusion transformers
(Khandelwal & Fuentes, arXiv 2510.00313, "SmoothQuant-Static / -Dynamic" (SQS / SQD)).

Per input channel j of a Linear layer, ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``;
the layer computes ``(X / s) (W * s)^T``, which is the same product in FP but moves the
activations' channel outliers into the weights, where per-channel/group weight scales
absorb them. SQS pairs it with static activation scales, SQD with dynamic ones (choose with
``QuantConfig.a_mode``). ``max|X_j|`` is taken over the calibration samples of *all*
denoising timesteps, because outlier channels move along the sampling trajectory (the
paper's motivation for timestep awareness) and one weight copy must serve every step;
per-timestep factors would need one quantized weight copy per timestep bucket, which
qlisten does not store. ``alpha`` is fixed or calibrated per layer: :func:`search_alpha`
tries a grid and keeps the alpha with the smallest output error of the quantized layer on
recorded input rows.
"""

from __future__ import annotations

import torch

from ..config import LayerRecipe
from ..errors import QuantError
from ..primitives import choose_qparams, fake_quant, group_view, qparams_from_range

ALPHA_GRID = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` for a ``(out, in)`` weight, clamped to
    ``[1e-3, 1e3]`` so that dead channels do not produce huge factors."""
    if act_absmax.numel() != weight.shape[1]:
        raise QuantError(
            f"smoothing: {act_absmax.numel()} activation channels vs {weight.shape[1]} weight inputs"
        )
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1.0 - alpha)).clamp(1e-3, 1e3)


def quantized_output_error(
    rows: torch.Tensor, weight: torch.Tensor, recipe: LayerRecipe, smooth: torch.Tensor | None
) -> float:
    """Relative MSE of the layer output when X (rows) and W are fake-quantized by ``recipe``
    after smoothing by ``smooth`` (``None``: no smoothing)."""
    x = rows.float()
    w = weight.detach().float()
    ref = x @ w.t()
    if smooth is not None:
        x, w = x / smooth, w * smooth
    if recipe.w_bits is not None:
        g = group_view(w, recipe.w_granularity, recipe.w_group_size)
        s, z = choose_qparams(g, recipe.w_bits, recipe.w_symmetric, recipe.w_scale_method)
        w = fake_quant(g, s, z, recipe.w_bits, recipe.w_symmetric).reshape(w.shape)
    if recipe.a_bits is not None:
        if recipe.a_granularity == "group" and x.shape[1] % recipe.a_group_size == 0:
            xg = x.reshape(x.shape[0], -1, recipe.a_group_size)
            lo = xg.amin(dim=(0, 2), keepdim=True) if recipe.a_mode == "static" else xg.amin(2, keepdim=True)
            hi = xg.amax(dim=(0, 2), keepdim=True) if recipe.a_mode == "static" else xg.amax(2, keepdim=True)
            s, z = qparams_from_range(lo, hi, recipe.a_bits, recipe.a_symmetric)
            x = fake_quant(xg, s, z, recipe.a_bits, recipe.a_symmetric).reshape(x.shape)
        else:
            lo = x.amin() if recipe.a_mode == "static" else x.amin(1, keepdim=True)
            hi = x.amax() if recipe.a_mode == "static" else x.amax(1, keepdim=True)
            s, z = qparams_from_range(lo, hi, recipe.a_bits, recipe.a_symmetric)
            x = fake_quant(x, s, z, recipe.a_bits, recipe.a_symmetric)
    out = x @ w.t()
    return float((out - ref).pow(2).mean() / ref.pow(2).mean().clamp_min(1e-12))


def search_alpha(
    rows: torch.Tensor, act_absmax: torch.Tensor, weight: torch.Tensor, recipe: LayerRecipe,
    grid: tuple[float, ...] = ALPHA_GRID,
) -> tuple[float, dict[float, float]]:
    """The alpha of ``grid`` with the smallest quantized output error on ``rows``.

    Returns the best alpha and every alpha's error (alpha 0 with unit-norm weights is close
    to no smoothing; the caller can compare with :func:`quantized_output_error` unsmoothed).
    """
    if rows is None or rows.numel() == 0:
        raise QuantError("alpha search needs recorded input rows (record with keep_rows > 0)")
    errors = {}
    for alpha in grid:
        errors[alpha] = quantized_output_error(rows, weight, recipe, smoothing_factors(act_absmax, weight, alpha))
    best = min(errors, key=errors.get)
    return best, errors
