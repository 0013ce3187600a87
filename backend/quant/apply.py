"""``quantize(module, config, calibration)``: swap layers for packed quantized wrappers.

The entry point of the library (torchao's ``quantize_`` in spirit): it resolves every
Linear / Conv2d layer's recipe from the config (skip list, then overrides), records
activation statistics if static activation scales need them, replaces the layers in place
and returns a :class:`~backend.quant.report.QuantReport`.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .calibration import ActivationRecorder, CalibrationRecord
from .config import LayerOverride, LayerRecipe, QuantConfig
from .errors import QuantError
from .int8_kernel import int8_matmul_is_fast
from .layers import QUANT_LAYER_TYPES, ActQuantizer, QuantConv2d, QuantLinear, int8_eligible
from .primitives import choose_qparams, qrange
from .report import LayerReport, QuantReport
from .timestep import attach_timestep_tracker

Calibration = CalibrationRecord | Callable[[], Any] | None


def resolve_recipe(name: str, config: QuantConfig) -> tuple[LayerRecipe | None, str]:
    """The recipe of layer ``name``, or ``(None, reason)`` when it stays in FP.

    The skip list applies first; overrides (fnmatch patterns, in order, last match wins)
    can then skip a layer or change its recipe, which also un-skips a skip-listed layer.
    """
    fields: dict[str, Any] = {
        "w_bits": config.w_bits, "a_bits": config.a_bits,
        "w_granularity": config.w_granularity, "w_group_size": config.w_group_size,
        "w_symmetric": config.w_symmetric, "w_scale_method": config.w_scale_method,
        "a_granularity": config.a_granularity, "a_group_size": config.a_group_size,
        "a_symmetric": config.a_symmetric, "a_mode": config.a_mode,
        "a_scale_method": config.a_scale_method,
        "smooth_alpha": config.smooth_alpha, "lowrank_rank": config.lowrank_rank,
        "residual_bits": config.residual_bits, "residual_threshold": config.residual_threshold,
        "act_lzs_group": config.act_lzs_group, "act_lzs_rounding": config.act_lzs_rounding,
    }
    skipped = next((p for p in config.skip if fnmatch.fnmatch(name, p)), None)
    reason = f"skip list ({skipped})" if skipped else ""
    notes: list[str] = []
    for pattern, ov in config.overrides:
        if not fnmatch.fnmatch(name, pattern):
            continue
        if ov.skip:
            skipped, reason = pattern, ov.reason or f"override {pattern!r}: kept in FP"
            continue
        skipped, reason = None, ""
        _apply_override(fields, ov)
        notes.append(ov.reason or f"override {pattern!r}")
    if skipped:
        return None, reason
    if fields["w_bits"] is None and fields["a_bits"] is None:
        return None, "; ".join(notes) or "config has neither weight nor activation bits"
    return LayerRecipe(**fields, notes=tuple(notes)), ""


def _apply_override(fields: dict[str, Any], ov: LayerOverride) -> None:
    keys = ("w_bits", "a_bits", "w_group_size", "a_group_size", "w_granularity", "a_granularity",
            "smooth_alpha")
    for key in keys:
        value = getattr(ov, key)
        if value is not None:
            fields[key] = value
    if ov.keep_fp_weights:
        fields["w_bits"] = None
    if ov.keep_fp_activations:
        fields["a_bits"] = None


def quantizable_layers(module: nn.Module, config: QuantConfig) -> dict[str, nn.Module]:
    """Every Linear (and Conv2d when ``config.quantize_conv``) by qualified name."""
    types: tuple[type, ...] = (nn.Linear, nn.Conv2d) if config.quantize_conv else (nn.Linear,)
    return {n: m for n, m in module.named_modules() if isinstance(m, types) and n}


def quantize(module: nn.Module, config: QuantConfig, calibration: Calibration = None) -> QuantReport:
    """Quantize ``module``'s layers in place as ``config`` says; return the report.

    ``calibration`` is a :class:`CalibrationRecord` (from :func:`calibrate` or an
    :class:`ActivationRecorder`) or a zero-argument callable that runs the sampling loop
    (it is then recorded on the FP model first). Static activation quantization needs one;
    weight-only and dynamic recipes do not.
    """
    if not isinstance(config, QuantConfig):
        raise QuantError("config must be a QuantConfig")
    if any(isinstance(m, QUANT_LAYER_TYPES) for m in module.modules()):
        raise QuantError("module is already quantized; quantize a fresh FP copy")
    layers = quantizable_layers(module, config)
    if not layers:
        raise QuantError(
            f"{type(module).__name__} has no quantizable layer (nn.Linear"
            + (" / nn.Conv2d)" if config.quantize_conv else ")")
        )
    plan: dict[str, LayerRecipe] = {}
    kept: list[tuple[str, str]] = []
    for name in layers:
        recipe, reason = resolve_recipe(name, config)
        if recipe is None:
            kept.append((name, reason))
        else:
            plan[name] = recipe
    if not plan:
        raise QuantError(
            f"every quantizable layer of {type(module).__name__} is kept in FP by the skip "
            "list / overrides; nothing to quantize"
        )
    needs_record = any(r.a_bits is not None and r.a_mode == "static" for r in plan.values())
    record: CalibrationRecord | None = None
    if isinstance(calibration, CalibrationRecord):
        record = calibration
    elif callable(calibration):
        searching = any(r.smooth_alpha == "search" for r in plan.values())
        record = ActivationRecorder(module, layer_names=list(plan), keep_rows=256 if searching else 0).run(
            calibration
        )
    elif calibration is not None:
        raise QuantError("calibration must be a CalibrationRecord, a callable or None")
    needs_record = needs_record or any(r.smooth_alpha is not None for r in plan.values())
    if needs_record and record is None:
        raise QuantError(
            "static activation quantization and smoothing need calibration data: pass "
            "calibration=<record or a callable that runs the sampling loop>, or use "
            "a_mode='dynamic' without smoothing"
        )

    fp_bytes = sum(p.numel() * 4 for p in module.parameters())
    tracker = attach_timestep_tracker(module)
    qopts = {"percentile": config.percentile, "grid": config.mse_grid, "min_ratio": config.mse_min_ratio}
    report = QuantReport(config=config.to_dict(), kept_fp=kept, model_fp_bytes=fp_bytes)
    for name, recipe in plan.items():
        layer = layers[name]
        n_buckets = 1
        if recipe.a_bits is not None and recipe.a_mode == "static":
            n_buckets = _bucket_count(record, name, config.a_timestep_buckets)
        extras: dict[str, Any] = {}
        smooth = None
        if recipe.smooth_alpha is not None:
            smooth, extras = _smoothing_for(name, layer, recipe, record)
        if isinstance(layer, nn.Linear):
            compute = _compute_for(name, recipe, config.compute)
            q: QuantLinear | QuantConv2d = QuantLinear.from_linear(
                name, layer, recipe, n_buckets=n_buckets, compute=compute, qopts=qopts, smooth=smooth
            )
        else:
            q = QuantConv2d.from_conv(name, layer, recipe, n_buckets=n_buckets, qopts=qopts)
        if q.act is not None:
            q.act.tracker = tracker
            if recipe.a_mode == "static":
                _set_static_ranges(q.act, record, name, recipe, n_buckets, config, smooth)
        _replace(module, name, q)
        rec = _layer_report(name, layer, q)
        rec.extras.update(extras)
        report.layers.append(rec)
    report.model_stored_bytes = model_stored_bytes(module)
    return report


def model_stored_bytes(module: nn.Module) -> int:
    """Quantized layers as stored plus every other parameter at FP32."""
    total, inside = 0, set()
    for name, m in module.named_modules():
        if isinstance(m, QUANT_LAYER_TYPES):
            total += m.stored_bytes()
            inside.update(f"{name}.{p}" for p, _ in m.named_parameters())
    total += sum(p.numel() * 4 for n, p in module.named_parameters() if n not in inside)
    return total


def _compute_for(name: str, recipe: LayerRecipe, mode: str) -> str:
    if recipe.a_bits is None or mode == "fake":
        return "fake"
    eligible = int8_eligible(recipe)
    if mode == "int8" and not eligible:
        raise QuantError(f"{name}: compute='int8' needs {QuantLinear.int8_requirements()}")
    if mode == "auto" and eligible and not int8_matmul_is_fast():
        return "fake"  # no fast int8 kernel on this CPU (see int8_kernel.py)
    return "int8" if eligible else "fake"


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _bucket_count(record: CalibrationRecord | None, name: str, requested: int | None) -> int:
    if record is None or name not in record.layers:
        raise QuantError(
            f"{name}: no calibration statistics for this layer (it never ran during the "
            "calibration loop); check that the calibration callable drives this module"
        )
    return max(1, min(requested or 1, len(record.layers[name])))


def _smoothing_for(
    name: str, layer: nn.Module, recipe: LayerRecipe, record: CalibrationRecord | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    from .methods.smoothing import search_alpha, smoothing_factors

    if not isinstance(layer, nn.Linear):
        raise QuantError(f"{name}: smoothing is implemented for Linear layers only")
    if record is None or name not in record.layers:
        raise QuantError(f"{name}: smoothing needs calibration statistics of this layer")
    stats = record.merged(name)
    if stats.ch_absmax is None:
        raise QuantError(f"{name}: smoothing needs per-channel statistics (record with per_channel=True)")
    alpha = recipe.smooth_alpha
    extras: dict[str, Any] = {}
    if alpha == "search":
        alpha, errors = search_alpha(stats.rows, stats.ch_absmax, layer.weight, recipe)
        extras["alpha_errors"] = {str(a): e for a, e in errors.items()}
    extras["smooth_alpha"] = float(alpha)
    return smoothing_factors(stats.ch_absmax, layer.weight, float(alpha)), extras


def _set_static_ranges(
    act: ActQuantizer, record: CalibrationRecord, name: str, recipe: LayerRecipe, n_buckets: int,
    config: QuantConfig, smooth: torch.Tensor | None = None,
) -> None:
    """Static ranges per timestep bucket, of the activations the quantizer will see: with
    smoothing that is ``x / s``, whose per-channel ranges are the recorded ones divided by
    ``s`` (exact for min-max; percentile / MSE use the recorded rows divided by ``s``)."""
    keys = sorted(record.layers[name])  # ascending timesteps
    chunks = [list(c) for c in np.array_split(np.array(keys), n_buckets)]
    bounds = torch.tensor(
        [(a[-1] + b[0]) / 2.0 for a, b in zip(chunks[:-1], chunks[1:])], dtype=torch.float32
    )
    lo_rows, hi_rows, counts = [], [], []
    for chunk in chunks:
        stats = record.merged(name, [int(k) for k in chunk])
        counts.append(stats.count)
        ch_min, ch_max, samples = stats.ch_min, stats.ch_max, stats.samples
        if smooth is not None:
            ch_min, ch_max = ch_min / smooth, ch_max / smooth
            samples = None if stats.rows is None else (stats.rows / smooth).reshape(-1)
        if recipe.a_granularity == "group":
            if recipe.a_scale_method != "minmax":
                raise QuantError(
                    f"{name}: static per-group activation scales support only min-max; use "
                    "dynamic activations or per-tensor static scales for percentile / MSE"
                )
            if ch_min is None or ch_min.numel() % act.group_size:
                raise QuantError(f"{name}: per-channel statistics do not match group size {act.group_size}")
            lo = ch_min.view(-1, act.group_size).amin(1)
            hi = ch_max.view(-1, act.group_size).amax(1)
        elif recipe.a_scale_method == "minmax":
            if smooth is not None:
                lo, hi = ch_min.min().reshape(1), ch_max.max().reshape(1)
            else:
                lo, hi = torch.tensor([stats.min]), torch.tensor([stats.max])
        else:
            if samples is None:
                raise QuantError(f"{name}: no value samples recorded for {recipe.a_scale_method} scales"
                                 + (" (smoothing needs recorded rows: keep_rows > 0)" if smooth is not None else ""))
            s, z = choose_qparams(
                samples.view(1, 1, -1), act.bits, act.symmetric,
                recipe.a_scale_method, percentile=config.percentile, grid=config.mse_grid,
                min_ratio=config.mse_min_ratio,
            )
            lo, hi = _range_from_qparams(s, z, act.bits, act.symmetric)
        lo_rows.append(lo.reshape(-1).float())
        hi_rows.append(hi.reshape(-1).float())
    act.set_static(torch.stack(lo_rows), torch.stack(hi_rows), bounds, int(np.argmax(counts)))


def _range_from_qparams(
    s: torch.Tensor, z: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    qmin, qmax = qrange(bits, symmetric)
    return (qmin - z) * s, (qmax - z) * s


def _layer_report(name: str, fp_layer: nn.Module, q: QuantLinear | QuantConv2d) -> LayerReport:
    r = q.recipe
    w = fp_layer.weight.detach().float()
    wq = q.effective_weight()
    diff = (w - wq).float()
    rel = float(diff.norm() / w.norm().clamp_min(1e-12))
    return LayerReport(
        name=name,
        kind="linear" if isinstance(q, QuantLinear) else "conv2d",
        shape=tuple(w.shape),
        w_bits=r.w_bits,
        a_bits=r.a_bits,
        w_granularity=r.w_granularity if r.w_bits is not None else "fp",
        w_group_size=r.w_group_size if r.w_granularity == "group" else None,
        a_mode=r.a_mode if r.a_bits is not None else None,
        a_granularity=r.a_granularity if r.a_bits is not None else None,
        compute=q.compute,
        stored_bytes=q.stored_bytes(),
        fp_bytes=q.fp_bytes(),
        weight_rel_error=rel,
        weight_mse=float(diff.pow(2).mean()),
        notes=list(r.notes),
        extras=_method_extras(q),
    )


def _method_extras(q: QuantLinear | QuantConv2d) -> dict[str, Any]:
    """What a method added to a layer, for the report (sparsity reached, branch sizes)."""
    out: dict[str, Any] = {}
    if q.residual_meta is not None:
        m = q.residual_meta
        out["residual"] = {"bits": m["bits"], "kept": m["nnz"], "numel": m["numel"], "sparsity": m["sparsity"],
                           "encoding": m["encoding"], "bytes": q.residual_stored_bytes()}
    if q.lr_up is not None:
        out["lowrank_rank"] = int(q.lr_up.shape[1])
    if q.act is not None and hasattr(q.act, "lzs_group"):
        from .methods.rtzs import effective_bits

        out["act_effective_bits"] = effective_bits(q.act.target_bits, q.act.lzs_group)
    return out


def dequantized_copy(module: nn.Module) -> nn.Module:
    """A plain FP copy whose Linear / Conv2d weights are the dequantized quantized ones.

    Activation quantization is dropped: the copy shows the effect of weight quantization
    alone and runs on any kernel (e.g. to export, or to compare W-only vs W+A error).
    """
    out = copy.deepcopy(module)
    for name, m in list(out.named_modules()):
        if isinstance(m, QuantLinear):
            lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            lin.weight.data.copy_(m.effective_weight())
            if m.bias is not None:
                lin.bias.data.copy_(m.bias.data)
            _replace(out, name, lin)
        elif isinstance(m, QuantConv2d):
            ca = dict(m.conv_args)
            conv = nn.Conv2d(bias=m.bias is not None, **ca)
            conv.weight.data.copy_(m.effective_weight())
            if m.bias is not None:
                conv.bias.data.copy_(m.bias.data)
            _replace(out, name, conv)
    return out


def quantized_layers(module: nn.Module) -> dict[str, QuantLinear | QuantConv2d]:
    """The quantized wrappers of ``module`` by qualified name."""
    return {n: m for n, m in module.named_modules() if isinstance(m, QUANT_LAYER_TYPES)}
