"""Methods benchmark: the four papers' PTQ methods vs plain PTQ vs torchao / optimum-quanto.

``python -m bench.methods`` — on both embedded models, one run, same seeds and prompts:
for each setting (W8A8, W6A8, W4A8, W4A4, W3A8) plain min-max PTQ, each method alone and the
best combination, plus the peer libraries at the nearest settings they support. Columns:
FID/FAD vs real data with its noise floor (two independent FP sample sets), paired FP-vs-Q
score (PSNR for images, SNR for audio), stored MB and ratio to FP32, quantize+calibrate
seconds, generation time ratio to FP. Writes bench/results/methods.{json,md}.

FD here uses the embedded classifiers' 128-d penultimate features (the offline FID/FAD
backends of backend.metrics); with ``--n`` samples per class / kind the sets hold 10 x n
items, so FD needs n >= 13 for a full-rank covariance. FD is biased upward at small counts:
compare values only inside one run, against the noise floor printed with them.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from backend.metrics import ClassifierAudioEmbedding, ClassifierImageEmbedding, compare_outputs
from backend.metrics.reference import ReferenceCache
from backend.models.registry import generate, get_denoiser, get_entry, load_pipeline
from backend.quant import DEFAULT_SKIP, QuantError, save_quantized
from backend.quant.recipes import Recipe, quantized_copy

from .common import RESULTS, environment, write_results

SETTINGS = {"W8A8": (8, 8), "W6A8": (6, 8), "W4A8": (4, 8), "W4A4": (4, 4), "W3A8": (3, 8)}
METHOD_RECIPES: dict[str, dict[str, Any]] = {
    "ptq": {"method": "ptq"},
    "rtzs": {"method": "rtzs", "lzs_group": 16},
    "qdit": {"method": "qdit", "group_size": 32},
    "smooth-sqs": {"method": "smooth", "a_mode": "static", "smooth_alpha": 0.5},
    "smooth-sqd": {"method": "smooth", "a_mode": "dynamic", "smooth_alpha": 0.5},
    "mixed": {"method": "mixed", "group_size": 32, "avg_bits_over": 1.0},
    "ptq4adm": {"method": "ptq4adm", "avg_bits_over": 1.0},
    "best": {"method": "best", "group_size": 32, "smooth_alpha": 0.5},
}


@dataclass
class Task:
    """One embedded model with its evaluation inputs, calibration inputs and reference set."""

    name: str
    pipe: Any
    entry: Any
    eval_inputs: list
    eval_seeds: list[int]
    floor_seeds: list[int]
    calib_inputs: list
    calib_seeds: list[int]
    reference: Any
    backend: Any
    steps: int

    def generate(self, inputs: list, seeds: list[int]) -> Any:
        return generate(self.pipe, self.entry, inputs, seeds, self.steps, batch_size=40)

    def calibrate(self) -> None:
        self.generate(self.calib_inputs, self.calib_seeds)


def digits_task(n: int, steps: int) -> Task:
    from training.digits.data import load_split

    pipe = load_pipeline("tiny-digits")
    entry = get_entry("tiny-digits")
    inputs = [str(d) for d in range(10) for _ in range(n)]
    return Task(
        "tiny-digits", pipe, entry, inputs, list(range(1000, 1000 + len(inputs))),
        list(range(5000, 5000 + len(inputs))), [str(d) for d in range(10)], list(range(9000, 9010)),
        load_split().test_images, ClassifierImageEmbedding.from_pretrained(), steps,
    )


def sounds_task(n: int, steps: int) -> Task:
    from training.sounds.corpus import KINDS, PREFIXES, build_corpus, held_out_phrasings, train_phrasings

    pipe = load_pipeline("tiny-sounds")
    entry = get_entry("tiny-sounds")
    inputs = []
    for kind in KINDS:
        phr = held_out_phrasings(kind)
        inputs += [PREFIXES[i % len(PREFIXES)] + phr[i % len(phr)] for i in range(n)]
    calib = [train_phrasings(k)[0] for k in KINDS]
    ref = build_corpus(seed=4242, train_per_kind=0, held_out_per_kind=max(n, 16)).audio
    return Task(
        "tiny-sounds", pipe, entry, inputs, list(range(1000, 1000 + len(inputs))),
        list(range(5000, 5000 + len(inputs))), calib, list(range(9000, 9000 + len(calib))),
        ref, ClassifierAudioEmbedding.from_pretrained(), steps,
    )


def calibrator(task: Task, recipe: Recipe) -> Callable[[], None]:
    """The calibration run of a recipe: PTQ4ADM on a text model renders the coverage-selected
    prompts the app's runner would use (same count as the plain calibration set); every
    other recipe (and PTQ4ADM on a class-conditional model) renders the task's calibration set."""
    if recipe.method != "ptq4adm" or task.entry.conditioning != "text":
        return task.calibrate
    from backend.models.tiny_sounds_pipeline import encode_text
    from backend.quant.methods.ptq4adm import build_calibration_prompts

    def embed(prompts: list[str]) -> np.ndarray:
        return encode_text(list(prompts)).reshape(len(prompts), -1).float().numpy()

    prompts = build_calibration_prompts(list(task.calib_inputs), len(task.calib_inputs), embed, seed=recipe.seed)
    return lambda: task.generate(prompts, task.calib_seeds[: len(prompts)])


def outputs_of(gen: Any) -> np.ndarray:
    return gen.data


def score(task: Task, fp: Any, q: Any, cache: ReferenceCache) -> dict[str, Any]:
    res = compare_outputs(outputs_of(fp), outputs_of(q), task.reference, task.backend,
                          sample_rate=fp.sample_rate, reference_sample_rate=16000 if fp.sample_rate else None,
                          cache=cache, n_boot=50, kid_subsets=50).to_dict()
    fd = res["fd"]
    paired = res["paired"]
    key = "psnr_db" if task.entry.kind == "image" else "snr_db"
    pmean = paired.get(key, {}).get("mean") if isinstance(paired.get(key), dict) else None
    return {
        "fd_q_vs_ref": None if fd["q_vs_ref"] is None else fd["q_vs_ref"]["value"],
        "fd_fp_vs_ref": None if fd["fp_vs_ref"] is None else fd["fp_vs_ref"]["value"],
        "fd_q_vs_fp": None if fd["q_vs_fp"] is None else fd["q_vs_fp"]["value"],
        "kid_q_vs_ref": res["kid"]["q_vs_ref"]["mean"],
        "paired_metric": key, "paired_mean": pmean, "counts": res["counts"], "notes": res["notes"],
    }


def serialized_bytes(module: nn.Module) -> int:
    """Bytes of ``torch.save(state_dict)``: one yardstick for every library's format."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def _skip_filter() -> Callable[[nn.Module, str], bool]:
    import fnmatch

    return lambda mod, fqn: isinstance(mod, nn.Linear) and not any(fnmatch.fnmatch(fqn, p) for p in DEFAULT_SKIP)


def peer_variants() -> dict[str, tuple[str, Callable[[nn.Module, Callable[[], None]], None]]]:
    """Peer libraries' recipes: label -> (nearest qlisten setting, quantize-in-place function)."""
    out: dict[str, tuple[str, Callable]] = {}

    def torchao(cfg_factory: Callable[[], Any]) -> Callable:
        def run(mod: nn.Module, calibrate: Callable[[], None]) -> None:
            from torchao.quantization import quantize_

            quantize_(mod, cfg_factory(), filter_fn=_skip_filter())
        return run

    def quanto(weights: str, activations: str | None) -> Callable:
        def run(mod: nn.Module, calibrate: Callable[[], None]) -> None:
            from optimum import quanto as oq

            act = getattr(oq, activations) if activations else None
            oq.quantize(mod, weights=getattr(oq, weights), activations=act, exclude=list(DEFAULT_SKIP))
            if activations:
                with oq.Calibration():
                    calibrate()
            oq.freeze(mod)
        return run

    from torchao.quantization import Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    out["torchao int8 dyn-act + int8 W"] = ("W8A8", torchao(Int8DynamicActivationInt8WeightConfig))
    out["torchao int8 weight-only"] = ("W8A16", torchao(Int8WeightOnlyConfig))
    out["torchao int4 weight-only g32"] = ("W4A16", torchao(lambda: Int4WeightOnlyConfig(group_size=32)))
    out["quanto W8A8"] = ("W8A8", quanto("qint8", "qint8"))
    out["quanto W4A8"] = ("W4A8", quanto("qint4", "qint8"))
    out["quanto W4 weight-only"] = ("W4A16", quanto("qint4", None))
    return out


def run_task(task: Task, settings: list[str], methods: list[str], peers: bool, cache: ReferenceCache,
             log: Callable[[str], None]) -> dict[str, Any]:
    denoiser = get_denoiser(task.pipe, task.entry)
    attr = task.entry.denoiser_attr
    # the floor set first doubles as warm-up (lazy loads, allocator), so the FP timing is not inflated
    floor = task.generate(task.eval_inputs, task.floor_seeds)
    t0 = time.perf_counter()
    fp = task.generate(task.eval_inputs, task.eval_seeds)
    fp_seconds = time.perf_counter() - t0
    fp_bytes = sum(p.numel() * 4 for p in denoiser.parameters())
    fp_serial = serialized_bytes(denoiser)
    base = score(task, fp, floor, cache)
    out: dict[str, Any] = {
        "model": task.name, "n_eval": len(task.eval_inputs), "steps": task.steps, "fp_generation_s": fp_seconds,
        "fd_fp_vs_ref": base["fd_fp_vs_ref"], "noise_floor_fd_fp_vs_fp": base["fd_q_vs_fp"],
        "noise_floor_fd_fp2_vs_ref": base["fd_q_vs_ref"], "fp32_bytes": fp_bytes, "fp32_serialized_bytes": fp_serial,
        "rows": [],
    }
    log(f"[{task.name}] FP: FD vs real {base['fd_fp_vs_ref']}, noise floor FD(FP, FP') {base['fd_q_vs_fp']}, "
        f"{fp_seconds:.1f}s for {len(task.eval_inputs)} samples")

    def measure(label: str, setting: str, method: str, build: Callable[[], tuple[nn.Module, dict]]) -> None:
        t1 = time.perf_counter()
        try:
            q, info = build()
        except (QuantError, ImportError, RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
            out["rows"].append({"label": label, "setting": setting, "method": method, "error": str(exc)[:300]})
            log(f"[{task.name}] {label}: FAILED {str(exc)[:200]}")
            return
        qtime = time.perf_counter() - t1
        setattr(task.pipe, attr, q)
        try:
            t2 = time.perf_counter()
            qgen = task.generate(task.eval_inputs, task.eval_seeds)
            gtime = time.perf_counter() - t2
        finally:
            setattr(task.pipe, attr, denoiser)
        s = score(task, fp, qgen, cache)
        row = {"label": label, "setting": setting, "method": method, **s, "quantize_s": qtime,
               "generation_s": gtime, **info}
        out["rows"].append(row)
        log(f"[{task.name}] {label}: FD {s['fd_q_vs_ref']} paired {s['paired_mean']} "
            f"size {info.get('stored_ratio')} q {qtime:.1f}s gen {gtime:.1f}s (FP {fp_seconds:.1f}s)")

    for setting in settings:
        w, a = SETTINGS[setting]
        for method in methods:
            spec = dict(METHOD_RECIPES[method])
            if method == "rtzs" and a >= 8:
                # A8 stays affine; RT on weights. |R| <= s/2 after rounding, so 0.25 keeps the larger half
                spec.update(residual_bits=2, residual_threshold=0.25)
            over = spec.pop("avg_bits_over", None)
            if over is not None:
                spec["avg_bits"] = w + over
            recipe = Recipe(w_bits=w, a_bits=a, seed=0, **spec)

            def build(recipe: Recipe = recipe) -> tuple[nn.Module, dict]:
                q, res = quantized_copy(denoiser, recipe, calibrator(task, recipe))
                path = RESULTS / f".tmp-{task.name}.safetensors"
                save_quantized(q, path)
                size = path.stat().st_size
                path.unlink()
                return q, {"stored_bytes": res.report.model_stored_bytes,
                           "stored_ratio": res.report.compression, "file_bytes": size,
                           "residual_sparsity": res.report.residual_sparsity,
                           "details": {k: v for k, v in res.details.items() if k != "mixed_precision"}}
            measure(f"{setting} {method}", setting, method, build)
    if peers:
        for label, (setting, fn) in peer_variants().items():
            def build(fn: Callable = fn) -> tuple[nn.Module, dict]:
                q = copy.deepcopy(denoiser)
                setattr(task.pipe, attr, q)
                try:
                    fn(q, task.calibrate)
                finally:
                    setattr(task.pipe, attr, denoiser)
                size = serialized_bytes(q)
                return q, {"stored_bytes": size, "stored_ratio": size / fp_serial, "file_bytes": size}
            measure(label, setting, "peer", build)
    # FP timed again at the end: the ratio uses the faster of the two, so a load spike on the
    # shared machine during one FP run does not shrink every ratio
    t0 = time.perf_counter()
    task.generate(task.eval_inputs, task.eval_seeds)
    out["fp_generation_s_end"] = time.perf_counter() - t0
    fp_best = min(fp_seconds, out["fp_generation_s_end"])
    for row in out["rows"]:
        if "generation_s" in row:
            row["generation_ratio"] = row["generation_s"] / fp_best
    return out


def to_markdown(env: dict, results: list[dict]) -> str:
    lines = ["# bench.methods", "",
             f"torch {env['torch']}, {env['cpu_capability']}. FD = Fréchet distance on "
             "the embedded classifiers' 128-d features (FID for tiny-digits, FAD for tiny-sounds).", ""]
    for r in results:
        kindp = "PSNR dB" if r["model"] == "tiny-digits" else "SNR dB"
        threads = f", {r['threads']} threads" if "threads" in r else ""
        lines += [f"## {r['model']} ({r['n_eval']} samples, {r['steps']} steps{threads})", "",
                  f"FP: FD vs real **{_f(r['fd_fp_vs_ref'])}**; noise floor: FD(FP, FP other seeds) "
                  f"{_f(r['noise_floor_fd_fp_vs_fp'])}, FD(FP other seeds vs real) "
                  f"{_f(r['noise_floor_fd_fp2_vs_ref'])}. "
                  f"FP32 denoiser {r['fp32_bytes'] / 2**20:.2f} MB. FP generation of the set "
                  f"{r['fp_generation_s']:.1f} s (start) / {r.get('fp_generation_s_end', float('nan')):.1f} s (end); "
                  "ratios use the faster.", "",
                  f"| recipe | FD vs real | Δ vs FP | FD(Q, FP) | {kindp} (paired) | stored MB | / FP32 | "
                  "quantize s | gen time / FP |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            if "error" in row:
                lines.append(f"| {row['label']} | failed: {row['error'][:80]} | | | | | | | |")
                continue
            fd, fpfd = row["fd_q_vs_ref"], r["fd_fp_vs_ref"]
            delta = "" if fd is None or not fpfd else f"{100 * (fd - fpfd) / fpfd:+.1f} %"
            lines.append(
                f"| {row['label']} | {_f(fd)} | {delta} | {_f(row['fd_q_vs_fp'])} | {_f(row['paired_mean'])} | "
                f"{row['stored_bytes'] / 2**20:.3f} | {row['stored_ratio']:.3f} | {row['quantize_s']:.1f} | "
                f"{row['generation_ratio']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-digits", "tiny-sounds"])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--methods", nargs="+", default=list(METHOD_RECIPES))
    ap.add_argument("--n", type=int, default=16, help="samples per class / sound kind")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="methods")
    ap.add_argument("--append", action="store_true",
                    help="merge into an existing <out>.json: rows of the same model and label are replaced")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment()
    cache = ReferenceCache()
    results = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.append and (RESULTS / f"{args.out}.json").is_file():
        results = json.loads((RESULTS / f"{args.out}.json").read_text())["results"]
    for name in args.models:
        task = digits_task(args.n, args.steps) if name == "tiny-digits" else sounds_task(args.n, args.steps)
        new = run_task(task, args.settings, args.methods, not args.no_peers, cache, log)
        new["threads"] = args.threads
        old = next((r for r in results if r["model"] == name), None)
        if old is None:
            results.append(new)
        else:  # same seeds and prompts, so the FP columns agree; keep old rows not re-measured
            labels = {row["label"] for row in new["rows"]}
            new["rows"] = [row for row in old["rows"] if row["label"] not in labels] + new["rows"]
            results[results.index(old)] = new
        write_results(args.out, {"environment": env, "results": results}, to_markdown(env, results))
    print(to_markdown(env, results))
    print(json.dumps({"written": str(RESULTS / f'{args.out}.md')}))


if __name__ == "__main__":
    main()
