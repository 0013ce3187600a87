"""One comparison job: load -> calibrate -> quantize -> generate FP & Q -> score -> histograms -> store.

``run_comparison(request, ctx)`` is the runner the job queue calls (``backend.jobs``); the
request is already normalised by ``backend.api.validate_request``. Each stage reports
progress through ``ctx.progress`` — which is also where a cancel reaches the job.

Why these choices:

* The same seeds for FP and quantized: ``registry.generate`` gives every (input, seed) pair
  its own CPU generator, so output i of both runs starts from the same noise and the paired
  scores (SNR, PSNR, ...) compare like with like.
* Calibration uses the model's own default prompts / classes (PTQ4ADM: a coverage-selected
  augmentation of them), NOT the user's prompts. So a quantized denoiser depends only on
  (model, recipe, steps, guidance) and is reused, through ``ctx.cached_path``, by every
  request that differs only in prompts or seeds; FP outputs are cached likewise by
  (model, inputs, seeds, steps, guidance), so trying a second recipe re-renders only the
  quantized side.
* One pipeline per model per process, and one lock per model: quantized generation swaps
  the denoiser inside the shared pipeline, which must not happen under another job's feet.
* Telemetry runs on the first two items only (it hooks every recorded layer, and its job is
  to show *why*, not to score); a telemetry failure is a note, not a failed run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from torch import nn

from backend.jobs import JobContext, JobError
from backend.metrics import MetricError, compare_outputs
from backend.models.errors import ModelUnavailableError
from backend.models.references import embedding_for, reference_for
from backend.models.registry import Generation, ModelEntry, generate, get_denoiser, get_entry, load_pipeline
from backend.quant import QuantError, QuantReport, load_quantized, save_quantized
from backend.quant.recipes import Recipe, quantized_copy

CALIBRATION_SEEDS = (1000,)  # one sample per default input; disjoint from the seeds a user is likely to type
TELEMETRY_ITEMS = 2
KID_TRUSTED_N = 16  # below this many samples the page warns that KID is a rough, noisy estimate
GENERATE_CHUNK = 8

_PIPES: dict[str, Any] = {}
_MODEL_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _model_lock(name: str) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _MODEL_LOCKS.setdefault(name, threading.Lock())


def pipeline_for(entry: ModelEntry) -> Any:
    """The process-wide pipeline of ``entry`` (loaded on first use; call under its lock)."""
    if entry.name not in _PIPES:
        _PIPES[entry.name] = load_pipeline(entry.name)
    return _PIPES[entry.name]


def items_of(request: dict[str, Any]) -> list[tuple[str, int]]:
    """Every input with every seed, input-major: the order of files, players and scores."""
    return [(x, int(s)) for x in request["inputs"] for s in request["seeds"]]


class _Swap:
    """Put ``module`` in the pipeline's denoiser slot for the duration of a ``with`` block."""

    def __init__(self, pipe: Any, entry: ModelEntry, module: nn.Module) -> None:
        self.pipe, self.attr, self.module = pipe, entry.denoiser_attr, module

    def __enter__(self) -> None:
        self.saved = getattr(self.pipe, self.attr)
        setattr(self.pipe, self.attr, self.module)

    def __exit__(self, *exc: object) -> None:
        setattr(self.pipe, self.attr, self.saved)


def _generate_chunked(
    pipe: Any, entry: ModelEntry, items: Sequence[tuple[str, int]], steps: int, guidance: float | None,
    report: Callable[[float], None],
) -> tuple[Generation, float]:
    """Generate in chunks (a progress report and cancel point between them); returns seconds."""
    parts: list[Generation] = []
    seconds = 0.0
    for lo in range(0, len(items), GENERATE_CHUNK):
        chunk = items[lo: lo + GENERATE_CHUNK]
        t0 = time.perf_counter()
        parts.append(generate(pipe, entry, [x for x, _ in chunk], [s for _, s in chunk], steps, guidance))
        seconds += time.perf_counter() - t0
        report(min(1.0, (lo + len(chunk)) / len(items)))
    data = np.concatenate([p.data for p in parts], axis=0)
    first = parts[0]
    return Generation(first.kind, data, first.sample_rate, tuple(x for x, _ in items),
                      tuple(s for _, s in items)), seconds


def calibration_inputs(entry: ModelEntry, recipe: Recipe) -> list[str]:
    """What the calibration run renders: the model's defaults, or PTQ4ADM's chosen prompts."""
    base = list(entry.default_inputs)
    if recipe.method == "ptq4adm" and entry.conditioning == "text":
        from backend.models.tiny_sounds_pipeline import encode_text
        from backend.quant.methods.ptq4adm import build_calibration_prompts

        def embed(prompts: list[str]) -> np.ndarray:
            return encode_text(list(prompts)).reshape(len(prompts), -1).float().numpy()

        return build_calibration_prompts(base, len(base), embed, seed=recipe.seed)  # same size as the default set
    return base


def _quantized_denoiser(
    ctx: JobContext, entry: ModelEntry, pipe: Any, fp: nn.Module, recipe: Recipe, steps: int,
    guidance: float | None,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """Load the cached quantized denoiser for (model, recipe, steps, guidance) or build it."""
    calib = calibration_inputs(entry, recipe)
    key = {"model": entry.name, "recipe": recipe.to_dict(), "steps": steps, "guidance": guidance,
           "calibration": calib, "calibration_seeds": list(CALIBRATION_SEEDS), "format": 1}
    path = ctx.cached_path("denoiser", key, ".safetensors")
    report_path = path.with_suffix(".report.json")
    if path.is_file() and report_path.is_file():
        ctx.progress("quantize", 0.3, "reusing the cached quantized denoiser")
        q = load_quantized(path, _fp_copy(fp))
        return q, json.loads(report_path.read_text(encoding="utf-8")), True

    items = [(x, s) for x in calib for s in CALIBRATION_SEEDS]

    def calibrate() -> None:
        ctx.progress("calibrate", 0.15, f"calibration run: {len(items)} samples")
        generate(pipe, entry, [x for x, _ in items], [s for _, s in items], steps, guidance)

    ctx.progress("calibrate", 0.1, f"calibrating {recipe.label}")
    q, res = quantized_copy(fp, recipe, calibrate)
    summary = _report_summary(res.report, res.seconds, res.details, calib)
    ctx.progress("quantize", 0.3, "storing the quantized denoiser")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    save_quantized(q, tmp)
    os.replace(tmp, path)
    tmp_r = report_path.with_name(f".{report_path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp_r.write_text(json.dumps(summary), encoding="utf-8")
    os.replace(tmp_r, report_path)
    return q, summary, False


def _fp_copy(fp: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(fp)


def _report_summary(report: QuantReport, seconds: float, details: dict[str, Any], calib: list[str]) -> dict[str, Any]:
    d = report.to_dict()
    d["quantize_seconds"] = seconds
    d["details"] = details
    d["calibration_inputs"] = calib
    return d


def _fp_outputs(
    ctx: JobContext, entry: ModelEntry, pipe: Any, items: list[tuple[str, int]], steps: int,
    guidance: float | None,
) -> tuple[Generation, float, bool]:
    """FP outputs of ``items``, from the cache when the same request was rendered before."""
    key = {"model": entry.name, "items": items, "steps": steps, "guidance": guidance, "format": 1}
    path = ctx.cached_path("fp_outputs", key, ".npz")
    if path.is_file():
        with np.load(path) as z:
            data, seconds, rate = z["data"], float(z["seconds"]), int(z["sample_rate"])
        gen = Generation(entry.kind, data, rate or None, tuple(x for x, _ in items), tuple(s for _, s in items))
        ctx.progress("generate FP", 0.55, "FP outputs from the cache")
        return gen, seconds, True
    gen, seconds = _generate_chunked(
        pipe, entry, items, steps, guidance,
        lambda f: ctx.progress("generate FP", 0.35 + 0.2 * f, f"FP model: {f:.0%} of {len(items)} samples"))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.npz")
    np.savez(tmp, data=gen.data, seconds=seconds, sample_rate=gen.sample_rate or 0)
    os.replace(tmp, path)
    return gen, seconds, False


def _write_outputs(run_dir: Path, gen: Generation, side: str) -> list[str]:
    folder = run_dir / side
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, row in enumerate(gen.data):
        if gen.kind == "audio":
            name = f"{side}/{i:03d}.wav"
            sf.write(run_dir / name, np.clip(row, -1.0, 1.0), gen.sample_rate, subtype="PCM_16")
        else:
            name = f"{side}/{i:03d}.png"
            img = row[..., 0] if row.shape[-1] == 1 else row
            Image.fromarray(img).save(run_dir / name)
        names.append(name)
    return names


def _value(x: dict[str, Any] | None, key: str) -> float | None:
    return None if x is None else x.get(key)


def _score(entry: ModelEntry, fp: Generation, q: Generation) -> dict[str, Any]:
    ref = reference_for(entry)
    backend = embedding_for(entry.kind)
    notes = []
    if ref is None:
        notes.append(f"{entry.name} has no offline real-data reference set: 'ref' scores use the FP outputs, "
                     "so only the Q-vs-FP columns are meaningful")
        ref_items, ref_rate = fp.data, fp.sample_rate
    else:
        ref_items, ref_rate = ref.items, ref.sample_rate
    res = compare_outputs(fp.data, q.data, ref_items, backend, sample_rate=fp.sample_rate,
                          reference_sample_rate=ref_rate, n_boot=50, kid_subsets=50).to_dict()
    fd, kid = res["fd"], res["kid"]
    n = min(res["counts"]["fp"], res["counts"]["q"])
    if 2 <= n < KID_TRUSTED_N:
        notes.append(f"KID from {n} samples is mostly noise (the unbiased estimate can be negative); "
                     f"use >= {KID_TRUSTED_N} samples (inputs x seeds) to rank recipes")
    paired = {k: v for k, v in res["paired"].items() if isinstance(v, dict)}
    return {
        "fd_fp_vs_ref": _value(fd["fp_vs_ref"], "value"),
        "fd_q_vs_ref": _value(fd["q_vs_ref"], "value"),
        "fd_q_vs_fp": _value(fd["q_vs_fp"], "value"),
        "kid_fp_vs_ref": _value(kid["fp_vs_ref"], "mean"),
        "kid_q_vs_ref": _value(kid["q_vs_ref"], "mean"),
        "kid_q_vs_fp": _value(kid["q_vs_fp"], "mean"),
        "paired": {k: v.get("mean") for k, v in paired.items()},
        "paired_per_item": {k: v.get("per_sample") for k, v in paired.items()},
        "counts": res["counts"],
        "embedding": res["backend"],
        "reference": None if ref is None else ref.description,
        "notes": notes + res["notes"],
    }


def _telemetry(
    pipe: Any, entry: ModelEntry, fp: nn.Module, q: nn.Module, items: list[tuple[str, int]], steps: int,
    guidance: float | None, run_dir: Path, meta: dict[str, Any],
) -> str | None:
    from backend.telemetry import capture_telemetry

    sub = items[:TELEMETRY_ITEMS]

    def run(model: nn.Module) -> None:
        with _Swap(pipe, entry, model):
            generate(pipe, entry, [x for x, _ in sub], [s for _, s in sub], steps, guidance)

    tel = capture_telemetry(fp, q, run, meta=meta)
    tel.save(run_dir / "telemetry")
    return "telemetry"


def run_comparison(request: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """The job runner (see the module docstring). Expected failures raise ``JobError``."""
    try:
        return _run(request, ctx)
    except (QuantError, ModelUnavailableError, MetricError) as exc:
        raise JobError(str(exc)) from exc
    except ValueError as exc:  # e.g. an unknown class label, found once the pipeline is loaded
        raise JobError(f"bad input: {exc}") from exc


def _run(request: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    entry = get_entry(request["model"])
    recipe = Recipe.from_dict(request["recipe"])
    steps, guidance = int(request["steps"]), request.get("guidance")
    items = items_of(request)
    run_dir = ctx.run_dir
    ctx.progress("load", 0.02, f"loading {entry.name}")
    with _model_lock(entry.name), torch.no_grad():
        pipe = pipeline_for(entry)
        fp = get_denoiser(pipe, entry)
        q, quant, cache_hit = _quantized_denoiser(ctx, entry, pipe, fp, recipe, steps, guidance)
        fp_gen, fp_seconds, fp_cached = _fp_outputs(ctx, entry, pipe, items, steps, guidance)
        with _Swap(pipe, entry, q):
            q_gen, q_seconds = _generate_chunked(
                pipe, entry, items, steps, guidance,
                lambda f: ctx.progress("generate Q", 0.55 + 0.25 * f, f"quantized model: {f:.0%} of {len(items)}"))
        ctx.progress("score", 0.82, "FAD/FID, KID and paired scores")
        metrics = _score(entry, fp_gen, q_gen)
        telemetry = None
        if request.get("telemetry", True):
            ctx.progress("histograms", 0.9, "activation histograms per layer and timestep")
            try:
                telemetry = _telemetry(pipe, entry, fp, q, items, steps, guidance, run_dir,
                                       {"model": entry.name, "recipe": recipe.label, "items": items[:TELEMETRY_ITEMS]})
            except (QuantError, RuntimeError, ValueError) as exc:
                metrics["notes"].append(f"activation histograms unavailable: {exc}")
    ctx.progress("store", 0.97, "writing outputs")
    fp_files = _write_outputs(run_dir, fp_gen, "fp")
    q_files = _write_outputs(run_dir, q_gen, "q")
    per_item = metrics.pop("paired_per_item")
    result = {
        "run_id": ctx.job_id,
        "model": entry.name,
        "kind": entry.kind,
        "recipe_label": recipe.label,
        "recipe": recipe.to_dict(),
        "sample_rate": fp_gen.sample_rate,
        "steps": steps,
        "guidance": entry.default_guidance if guidance is None else guidance,
        "items": [
            {"input": x, "seed": s, "fp": f, "q": qf,
             "paired": {k: (v[i] if v is not None and i < len(v) else None) for k, v in per_item.items()}}
            for i, ((x, s), f, qf) in enumerate(zip(items, fp_files, q_files, strict=True))
        ],
        "metrics": metrics,
        "size": {"fp_bytes": quant["model_fp_bytes"], "q_bytes": quant["model_stored_bytes"],
                 "ratio": quant["compression"], "quantized_layers": len(quant["layers"]),
                 "kept_fp": len(quant["kept_fp"]), "residual_sparsity": quant["residual_sparsity"]},
        "speed": {"fp_seconds": fp_seconds, "q_seconds": q_seconds,
                  "ratio": q_seconds / fp_seconds if fp_seconds > 0 else None,
                  "quantize_seconds": quant["quantize_seconds"], "fp_from_cache": fp_cached},
        "telemetry": telemetry,
        "denoiser_cache_hit": cache_hit,
    }
    (run_dir / "report.json").write_text(json.dumps(quant, indent=1), encoding="utf-8")
    run_meta = {"id": ctx.job_id, "model": entry.name, "kind": entry.kind, "recipe_label": recipe.label,
                "prompts": [x for x, _ in items], "seeds": [s for _, s in items], "metrics": metrics,
                "size": result["size"], "speed": result["speed"]}
    if entry.kind == "audio":
        run_meta.update(fp_audio=fp_files, q_audio=q_files, sample_rate=fp_gen.sample_rate)
    else:
        run_meta.update(fp_images=fp_files, q_images=q_files)
    (run_dir / "run.json").write_text(json.dumps(run_meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return result


__all__ = ["calibration_inputs", "items_of", "pipeline_for", "run_comparison"]
