"""Calibration-set benchmark: PTQ4ADM's calibration sets vs random sets of the same size.

``python -m bench.calibration`` — on tiny-sounds, plain min-max PTQ with STATIC activation
scales (the setting where the calibration set alone decides the activation ranges) at W4A8
and W8A8, calibrated with:

* ``default``        bench.methods' set (first training phrasing of each kind), for context;
* ``ptq4adm``        k prompts: seeds augmented by rules, k-center in MiniLM text space
                     (arXiv 2409.13894 Sec. 3.1, backend/quant/methods/ptq4adm.py);
* ``random-s<r>``    k prompts drawn at random from the same augmented pool (several seeds);
* ``ptq4adm-act``    activation-aware samples (Sec. 3.2): 2k k-center prompts recorded one by
                     one, then k x steps (prompt, timestep) samples chosen greedily to cover
                     every layer's activation range of that pool;
* ``act-random-s<r>`` the same number of (prompt, timestep) samples drawn at random from the
                     same recorded pool.

Every set calibrates the same FP denoiser; all quantized models generate the same held-out
evaluation prompts with the same seeds. Columns: FAD vs the real reference clips (bench.methods'
FD on the embedded audio classifier), FAD vs the FP samples, paired SNR (FP vs Q, same seed),
coverage radius and mean nearest distance of the set in (L2-normalised) text-embedding space
over the evaluation prompts and over the candidate pool, and how well the set's activation
ranges cover the evaluation run's (mean over layers of |C ∩ E| / |E|, and |C| / |E|).
Writes bench/results/calibration.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from backend.metrics.paired import paired_audio_scores
from backend.metrics.reference import ReferenceCache
from backend.quant import ActivationRecorder, CalibrationRecord
from backend.quant.methods.ptq4adm import (
    build_calibration_prompts,
    candidate_pool,
    nearest_center_distances,
    random_calibration_prompts,
    random_samples,
    range_coverage,
    record_from_samples,
    record_per_prompt,
    sample_ranges,
    select_covering_samples,
)
from backend.quant.recipes import Recipe, quantized_copy

from .common import RESULTS, environment, write_results
from .methods import SETTINGS, Task, score, sounds_task


def embed_texts(prompts: list[str]) -> np.ndarray:
    """MiniLM sentence embeddings (the tiny-sounds text encoder), L2-normalised, (n, 384)."""
    from backend.models.tiny_sounds_pipeline import encode_text

    e = encode_text(list(prompts))[:, 0, :].numpy().astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def text_coverage(prompts: list[str], targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Coverage radius and mean nearest-prompt distance of ``prompts`` over each target set."""
    c = embed_texts(prompts)
    out = {}
    for name, pts in targets.items():
        d = nearest_center_distances(pts, c)
        out[f"radius_{name}"] = float(d.max())
        out[f"mean_dist_{name}"] = float(d.mean())
    return out


def act_range_coverage(calib: CalibrationRecord, evaluation: CalibrationRecord) -> dict[str, float]:
    """Mean over layers of |C ∩ E| / |E| and |C| / |E| for all-timestep [min, max] ranges."""
    inter, ratio = [], []
    for layer in evaluation.layers:
        if layer not in calib.layers:
            continue
        e, c = evaluation.merged(layer), calib.merged(layer)
        span = e.max - e.min
        if span <= 0:
            continue
        inter.append(max(0.0, min(c.max, e.max) - max(c.min, e.min)) / span)
        ratio.append((c.max - c.min) / span)
    return {"act_cover_of_eval": float(np.mean(inter)), "act_span_over_eval": float(np.mean(ratio))}


def generate_with(task: Task, model: torch.nn.Module, inputs: list, seeds: list[int]) -> Any:
    attr = task.entry.denoiser_attr
    fp = getattr(task.pipe, attr)
    setattr(task.pipe, attr, model)
    try:
        return task.generate(inputs, seeds)
    finally:
        setattr(task.pipe, attr, fp)


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from training.sounds.corpus import KINDS, train_phrasings

    t_start, c_start = time.perf_counter(), time.process_time()
    task = sounds_task(args.n, args.steps)
    denoiser = getattr(task.pipe, task.entry.denoiser_attr)
    cache = ReferenceCache()
    seeds = [p for kind in KINDS for p in train_phrasings(kind)[: args.seeds_per_kind]]
    k = args.k
    pool = candidate_pool(seeds, 0)
    log(f"{len(seeds)} seed prompts -> pool of {len(pool)} candidates; k = {k}")

    # FP reference run, recorded: the evaluation prompts' own activation ranges
    t0 = time.perf_counter()
    eval_rec = ActivationRecorder(denoiser, max_samples=256)
    with eval_rec:
        fp = task.generate(task.eval_inputs, task.eval_seeds)
    fp_s = time.perf_counter() - t0
    floor = task.generate(task.eval_inputs, task.floor_seeds)
    base = score(task, fp, floor, cache)
    log(f"FP: FAD vs real {_f(base['fd_fp_vs_ref'])}; FP other seeds: vs real {_f(base['fd_q_vs_ref'])}, "
        f"vs FP {_f(base['fd_q_vs_fp'])}; {fp_s:.1f}s")

    targets = {"eval": embed_texts(sorted(set(task.eval_inputs))), "pool": embed_texts(pool)}

    def calib_seeds(prompts: list[str]) -> list[int]:
        return list(range(9000, 9000 + len(prompts)))

    def record_prompts(prompts: list[str]) -> CalibrationRecord:
        rec = ActivationRecorder(denoiser, max_samples=256)
        with rec:
            task.generate(prompts, calib_seeds(prompts))
        return rec.record

    sets: dict[str, dict[str, Any]] = {}
    sets["default"] = {"prompts": list(task.calib_inputs), "kind": "prompts"}
    sets["ptq4adm"] = {"prompts": build_calibration_prompts(seeds, k, embed_texts, seed=0), "kind": "prompts"}
    for r in range(args.random_seeds):
        sets[f"random-s{r}"] = {"prompts": random_calibration_prompts(seeds, k, seed=r), "kind": "prompts"}
    for s in sets.values():
        t0 = time.perf_counter()
        s["record"] = record_prompts(s["prompts"])
        s["calibrate_s"] = time.perf_counter() - t0

    if args.act:
        t0 = time.perf_counter()
        act_pool = build_calibration_prompts(seeds, 2 * k, embed_texts, seed=0)
        pool_seeds = dict(zip(act_pool, calib_seeds(act_pool)))
        recs = record_per_prompt(denoiser, act_pool, lambda p: task.generate([p], [pool_seeds[p]]), max_samples=256)
        ranges = sample_ranges(recs)
        record_s = time.perf_counter() - t0
        budget = k * args.steps
        t1 = time.perf_counter()
        chosen = select_covering_samples(ranges, budget)
        select_s = time.perf_counter() - t1
        full_at = next((i + 1 for i in range(len(chosen)) if range_coverage(ranges, chosen[: i + 1]) >= 1 - 1e-9),
                       None)
        used = sorted({i for i, _ in chosen})
        sets["ptq4adm-act"] = {
            "prompts": [act_pool[i] for i in used], "kind": "samples", "record": record_from_samples(recs, chosen),
            "samples": len(chosen), "pool_samples": len(ranges), "pool_prompts": len(act_pool),
            "range_coverage": range_coverage(ranges, chosen), "full_coverage_after": full_at,
            "calibrate_s": record_s + select_s, "select_s": select_s,
        }
        log(f"activation-aware: {len(ranges)} samples from {len(act_pool)} prompts recorded in {record_s:.1f}s; "
            f"{budget} chosen ({len(used)} prompts) in {select_s:.2f}s; union covered after {full_at} samples")
        for r in range(args.random_seeds):
            pick = random_samples(ranges, budget, seed=r)
            sets[f"act-random-s{r}"] = {
                "prompts": [act_pool[i] for i in sorted({i for i, _ in pick})], "kind": "samples",
                "record": record_from_samples(recs, pick), "samples": len(pick),
                "range_coverage": range_coverage(ranges, pick), "calibrate_s": record_s,
            }

    rows = []
    for name, s in sets.items():
        cov = text_coverage(s["prompts"], targets)
        act = act_range_coverage(s["record"], eval_rec.record)
        info = {"set": name, "kind": s["kind"], "n_prompts": len(s["prompts"]), "prompts": s["prompts"],
                **{key: v for key, v in s.items() if key not in ("prompts", "record", "kind")}, **cov, **act}
        for setting in args.settings:
            w, a = SETTINGS[setting]
            t0 = time.perf_counter()
            q, res = quantized_copy(denoiser, Recipe(w_bits=w, a_bits=a, method="ptq"), None, record=s["record"])
            q_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            qgen = generate_with(task, q, task.eval_inputs, task.eval_seeds)
            gen_s = time.perf_counter() - t0
            sc = score(task, fp, qgen, cache)
            paired = paired_audio_scores(fp.data, qgen.data, fp.sample_rate)
            snr, lsd = paired["snr_db"]["mean"], paired["lsd_db"]["mean"]
            row = {**info, "setting": setting, "fd_q_vs_ref": sc["fd_q_vs_ref"], "fd_q_vs_fp": sc["fd_q_vs_fp"],
                   "kid_q_vs_ref": sc["kid_q_vs_ref"], "snr_db": snr, "lsd_db": lsd, "quantize_s": q_s,
                   "generate_s": gen_s}
            rows.append(row)
            log(f"{setting} {name}: FAD {_f(sc['fd_q_vs_ref'])} FAD(Q,FP) {_f(sc['fd_q_vs_fp'])} "
                f"SNR {_f(snr, '.2f')} dB LSD {_f(lsd, '.2f')} dB "
                f"| text radius eval {cov['radius_eval']:.3f} | act cover {act['act_cover_of_eval']:.3f} "
                f"span {act['act_span_over_eval']:.2f} | gen {gen_s:.1f}s")
    return {
        "model": task.name, "n_eval": len(task.eval_inputs), "steps": task.steps, "k": k,
        "seed_prompts": seeds, "pool_size": len(pool), "random_seeds": args.random_seeds,
        "fd_fp_vs_ref": base["fd_fp_vs_ref"], "noise_floor_fd_fp_vs_fp": base["fd_q_vs_fp"],
        "noise_floor_fd_fp2_vs_ref": base["fd_q_vs_ref"], "fp_generation_s": fp_s, "rows": rows,
        "total_s": time.perf_counter() - t_start, "total_cpu_s": time.process_time() - c_start,
    }


def _f(v: Any, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


COMPARED = (("fd", "fd_q_vs_ref"), ("fd_fp", "fd_q_vs_fp"), ("snr", "snr_db"), ("lsd", "lsd_db"))


def summary(result: dict) -> list[dict[str, Any]]:
    """Per setting: PTQ4ADM vs the mean (min..max) of the random sets."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in result["rows"]):
        rows = {r["set"]: r for r in result["rows"] if r["setting"] == setting}
        for method, prefix in (("ptq4adm", "random-s"), ("ptq4adm-act", "act-random-s")):
            if method not in rows:
                continue
            rnd = [r for n, r in rows.items() if n.startswith(prefix)]
            entry = {"setting": setting, "method": method}
            for key, col in COMPARED:
                entry[key] = rows[method][col]
                vals = [r[col] for r in rnd if r[col] is not None]
                entry[f"random_{key}_mean"] = float(np.mean(vals)) if vals else None
                entry[f"random_{key}_min"] = float(np.min(vals)) if vals else None
                entry[f"random_{key}_max"] = float(np.max(vals)) if vals else None
            out.append(entry)
    return out


def to_markdown(env: dict, r: dict, args: argparse.Namespace) -> str:
    lines = [
        "# bench.calibration — PTQ4ADM calibration sets vs random sets of the same size", "",
        f"`python -m bench.calibration {' '.join(args.argv)}`".replace(" `", "`"), "",
        f"torch {env['torch']}, {env['threads']} thread(s), {env['cpu_capability']}. Model {r['model']}: "
        f"{r['n_eval']} evaluation clips (held-out phrasings, {args.n} per kind), {r['steps']} steps, plain "
        "min-max PTQ with static per-tensor activation scales (one set for all timesteps). "
        f"{len(r['seed_prompts'])} seed prompts ({args.seeds_per_kind} training phrasings per kind) -> "
        f"{r['pool_size']} augmented candidates; k = {r['k']} prompts per set; "
        f"{r['random_seeds']} random seeds per baseline. Total {r['total_s'] / 60:.1f} min wall clock"
        + (f", {r['total_cpu_s'] / 60:.1f} min CPU" if "total_cpu_s" in r else "")
        + " (the 2-core machine was shared with other jobs).", "",
        f"FP: FAD vs real **{_f(r['fd_fp_vs_ref'])}**; noise floor: FAD(FP other seeds, real) "
        f"{_f(r['noise_floor_fd_fp2_vs_ref'])}, FAD(FP, FP other seeds) {_f(r['noise_floor_fd_fp_vs_fp'])}.", "",
        "Text coverage: radius = max over targets of the distance (L2 on unit MiniLM embeddings) to the nearest "
        "calibration prompt; 'eval' targets = the held-out evaluation prompts, 'pool' = the augmented candidates. "
        "Act cover = mean over layers of |calib range ∩ eval range| / |eval range|; span = |calib| / |eval|.", "",
        "| setting | set | prompts | FAD vs real | FAD(Q, FP) | SNR dB (paired) | LSD dB (paired) | radius eval | "
        "mean dist eval | radius pool | act cover | act span |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['setting']} | {row['set']} | {row['n_prompts']} | {_f(row['fd_q_vs_ref'])} | "
            f"{_f(row['fd_q_vs_fp'])} | {_f(row['snr_db'], '.2f')} | {_f(row['lsd_db'], '.2f')} | "
            f"{_f(row['radius_eval'])} | "
            f"{_f(row['mean_dist_eval'])} | {_f(row['radius_pool'])} | {_f(row['act_cover_of_eval'])} | "
            f"{_f(row['act_span_over_eval'], '.2f')} |")
    lines += ["", "## PTQ4ADM vs random sets of the same size (random: mean [min, max] over seeds)", "",
              "| setting | method | FAD vs real | random | FAD(Q, FP) | random | SNR dB | random | LSD dB | random |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary(r):
        cells = []
        for key, _ in COMPARED:
            fmt = ".2f" if key in ("snr", "lsd") else ".3f"
            cells += [_f(e[key], fmt), f"{_f(e[f'random_{key}_mean'], fmt)} [{_f(e[f'random_{key}_min'], fmt)}, "
                      f"{_f(e[f'random_{key}_max'], fmt)}]"]
        lines.append(f"| {e['setting']} | {e['method']} | " + " | ".join(cells) + " |")
    act = next((row for row in r["rows"] if row["set"] == "ptq4adm-act"), None)
    if act is not None:
        lines += ["", f"Activation-aware selection: {act['samples']} (prompt, timestep) samples out of "
                  f"{act['pool_samples']} ({act['pool_prompts']} k-center prompts x {r['steps']} steps); the greedy "
                  f"choice covers {100 * act['range_coverage']:.1f} % of the pool's per-layer ranges (mean over "
                  f"layers; full coverage after {act['full_coverage_after'] or 'more than ' + str(act['samples'])} "
                  f"samples; selection {act['select_s']:.2f} s)."]
        rnd = [row["range_coverage"] for row in r["rows"]
               if row["set"].startswith("act-random") and row["setting"] == act["setting"]]
        if rnd:
            lines[-1] += f" Random samples of the same count cover {100 * float(np.mean(rnd)):.1f} % on average."
    lines += ["", "Prompt sets:", ""]
    for row in r["rows"]:
        if row["setting"] == r["rows"][0]["setting"]:
            shown = "; ".join(row["prompts"][:12]) + (" …" if len(row["prompts"]) > 12 else "")
            lines.append(f"* **{row['set']}**: {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=13, help="evaluation clips per sound kind (>= 13: FAD needs 129)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--k", type=int, default=10, help="calibration prompts per set")
    ap.add_argument("--seeds-per-kind", type=int, default=2, help="training phrasings per kind used as seeds")
    ap.add_argument("--random-seeds", type=int, default=3)
    ap.add_argument("--settings", nargs="+", default=["W4A8", "W8A8"])
    ap.add_argument("--no-act", dest="act", action="store_false", help="skip the activation-aware sets")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="calibration")
    ap.add_argument("--render", action="store_true", help="only re-render the .md from the existing .json")
    args = ap.parse_args(argv)
    if args.render:
        payload = json.loads((RESULTS / f"{args.out}.json").read_text())
        saved = argparse.Namespace(**payload["args"])
        payload["summary"] = summary(payload["result"])
        write_results(args.out, payload, to_markdown(payload["environment"], payload["result"], saved))
        return
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    torch.set_num_threads(args.threads)
    env = environment()

    def log(msg: str) -> None:
        print(msg, flush=True)

    result = run(args, log)
    md = to_markdown(env, result, args)
    write_results(args.out, {"environment": env, "args": {k: v for k, v in vars(args).items()},
                             "summary": summary(result), "result": result}, md)
    print(md)
    print(json.dumps({"written": str(RESULTS / f"{args.out}.md")}))


if __name__ == "__main__":
    main()
