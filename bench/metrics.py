"""Does the metric separate good from bad, and what is its noise floor? ``python -m bench.metrics``

On each embedded model: FAD/FID (Fréchet distance on the embedded classifiers' 128-d
features) and KID of

* FP samples vs real data,
* a second, independent FP sample set (other seeds) vs the first: the noise floor,
* a crudely quantized model (W2 min-max per channel, FP activations) vs real data,
* W8A8 min-max for contrast,

at the FD-capable count (``--n`` per class / kind, 10 classes) and, for KID, at the app's
typical count (``--app-n`` samples: FD is undefined below 129 samples there). Writes
bench/results/metrics.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from backend.metrics import kernel_inception_distance, rms_scale
from backend.metrics.reference import ReferenceCache
from backend.models.registry import get_denoiser
from backend.quant.recipes import Recipe, quantized_copy

from .common import RESULTS, environment, write_results
from .methods import Task, digits_task, sounds_task

VARIANTS = {"W8A8 min-max": Recipe(w_bits=8, a_bits=8, method="ptq"),
            "W2 min-max (crude)": Recipe(w_bits=2, a_bits=None, method="ptq")}


def _fd(a_emb: np.ndarray, b_emb: np.ndarray) -> dict[str, Any]:
    from backend.metrics import frechet_distance_with_ci

    r = frechet_distance_with_ci(a_emb, b_emb, n_boot=100, seed=0)
    return {"value": r.value, "ci": [r.ci_low, r.ci_high], "n": [r.n_x, r.n_y]}


def _kid(a_emb: np.ndarray, b_emb: np.ndarray, scale: float, subset_size: int = 1000) -> dict[str, Any]:
    """KID mean and std over random subsets; with an app-sized `subset_size` the std is the spread
    of the single reading the app would show."""
    r = kernel_inception_distance(a_emb, b_emb, num_subsets=200, subset_size=subset_size, seed=0,
                                  feature_scale=scale)
    return {"mean": r.mean, "std": r.std, "n": [r.n_x, r.n_y]}


def measure(task: Task, app_n: int, cache: ReferenceCache) -> dict[str, Any]:
    backend = task.backend
    rate = 16_000 if task.entry.kind == "audio" else None

    def embed(items: Any) -> np.ndarray:
        return backend.embed(items, rate, allow_silent=True)

    ref = cache.get_or_compute(backend, task.reference, rate).embeddings
    scale = rms_scale(ref)
    sets = {"FP": task.generate(task.eval_inputs, task.eval_seeds).data,
            "FP (other seeds)": task.generate(task.eval_inputs, task.floor_seeds).data}
    denoiser = get_denoiser(task.pipe, task.entry)
    for label, recipe in VARIANTS.items():
        q, _ = quantized_copy(denoiser, recipe, task.calibrate)
        setattr(task.pipe, task.entry.denoiser_attr, q)
        try:
            sets[label] = task.generate(task.eval_inputs, task.eval_seeds).data
        finally:
            setattr(task.pipe, task.entry.denoiser_attr, denoiser)
    emb = {k: embed(v) for k, v in sets.items()}
    # app-sized readings: random subsets of app_n samples from each set, many draws
    n = len(task.eval_inputs)
    rows = []
    for label, e in emb.items():
        row = {"set": label, "fd_vs_real": _fd(e, ref), "kid_vs_real": _kid(e, ref, scale),
               "kid_vs_real_app_n": _kid(e, ref, scale, app_n)}
        if label != "FP":
            row["fd_vs_fp"] = _fd(e, emb["FP"])
            row["kid_vs_fp_app_n"] = _kid(e, emb["FP"], scale, app_n)
        rows.append(row)
    return {"model": task.name, "n": n, "app_n": app_n, "steps": task.steps, "n_real": int(ref.shape[0]),
            "embedding": backend.name, "rows": rows}


def to_markdown(env: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = ["# bench.metrics", "",
             f"torch {env['torch']}, {env['threads']} threads. FD = Fréchet distance on the embedded classifiers' "
             "128-d penultimate features (FID for tiny-digits, FAD for tiny-sounds), with a 95 % bootstrap CI; "
             "KID = unbiased polynomial-kernel MMD on features scaled by the real set's RMS.", ""]
    for r in results:
        lines += [f"## {r['model']} ({r['n']} samples, {r['steps']} steps; {r['n_real']} real; "
                  f"app-sized readings: mean ± std over 200 random subsets of {r['app_n']})", "",
                  "| set | FD vs real [95 % CI] | FD vs FP | KID vs real | KID vs real, n = app | KID vs FP, n = app |",
                  "|---|---|---|---|---|---|"]
        for row in r["rows"]:
            fd = row["fd_vs_real"]
            fdfp = "—" if "fd_vs_fp" not in row else f"{row['fd_vs_fp']['value']:.2f}"
            kf = row.get("kid_vs_fp_app_n")
            kfp = "—" if kf is None else f"{kf['mean']:.4f} ± {kf['std']:.4f}"
            app = row["kid_vs_real_app_n"]
            lines.append(
                f"| {row['set']} | {fd['value']:.2f} [{fd['ci'][0]:.2f}, {fd['ci'][1]:.2f}] | {fdfp} | "
                f"{row['kid_vs_real']['mean']:.4f} | {app['mean']:.4f} ± {app['std']:.4f} | {kfp} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-digits", "tiny-sounds"])
    ap.add_argument("--n", type=int, default=16, help="samples per class / sound kind (FD needs 10 n >= 129)")
    ap.add_argument("--app-n", type=int, default=8, help="the app's typical sample count (KID only)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment()
    cache = ReferenceCache()
    results = []
    for name in args.models:
        task = digits_task(args.n, args.steps) if name == "tiny-digits" else sounds_task(args.n, args.steps)
        results.append(measure(task, args.app_n, cache))
        write_results("metrics", {"environment": env, "results": results}, to_markdown(env, results))
    print(to_markdown(env, results))
    print(json.dumps({"written": str(RESULTS / "metrics.md")}))


if __name__ == "__main__":
    main()
