"""Q-DiT group-size search benchmark: proxy fitness cost, metric fitness cost, rank agreement.

``python -m bench.qdit_search`` — on both embedded models at W4A8 with the app's Q-DiT
search settings (``Recipe(method="qdit", search=True)``: group sizes 16/32/64/128,
population 12, 4 generations, mean group >= 64, seed 0; backend/quant/methods/qdit.py):

1. the evolutionary search with the PROXY fitness (denoiser output error vs FP on every
   second captured calibration call), timed: capture + layer bank + search;
2. the cost of ONE METRIC-fitness evaluation, as Q-DiT's paper uses it (arXiv 2406.17343
   Sec. 3.2: FID of generated samples; FAD for audio), on the embedded embedding nets:
   generate the evaluation set with the candidate model, embed it, Fréchet distance to the
   real reference set — and the extrapolated cost of a whole metric-fitness search (the
   proxy search's evaluation count, and the paper's population 50 x 10 generations);
3. Spearman rank correlation (scipy.stats.spearmanr) between proxy and metric fitness over
   genomes sampled evenly by proxy rank from everything the search evaluated.

The metric's own seed noise is measured too (best genome re-generated with other seeds),
since a rank agreement can be no better than the metric's repeatability allows.
Writes bench/results/qdit_search.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from backend.metrics.frechet import frechet_distance_from_embeddings
from backend.metrics.reference import ReferenceCache
from backend.quant.capture import capture_calls
from backend.quant.methods.qdit import LayerBank, SearchConfig, evolutionary_search, proxy_fitness, search_summary
from backend.quant.recipes import Recipe, base_config

from .common import RESULTS, environment, write_results
from .methods import Task, digits_task, sounds_task

PAPER_EVALUATIONS = 50 * 10  # population 50, 10 generations: an upper bound on distinct genomes


def app_search_config(recipe: Recipe) -> SearchConfig:
    """The SearchConfig backend.quant.recipes.apply_recipe builds from a Q-DiT recipe."""
    return SearchConfig(choices=recipe.search_choices, population=recipe.search_population,
                        generations=recipe.search_generations, parents=max(2, recipe.search_population // 3),
                        crossovers=max(1, recipe.search_population // 3),
                        mutations=max(1, recipe.search_population // 3),
                        min_mean_group=recipe.search_min_mean_group, seed=recipe.seed)


class MetricFitness:
    """FID / FAD of the candidate model's samples vs the real reference set (lower is better)."""

    def __init__(self, task: Task, cache: ReferenceCache, fp_embeddings: np.ndarray) -> None:
        self.task = task
        rate = 16000 if task.entry.kind == "audio" else None
        self.rate = rate
        self.ref = cache.get_or_compute(task.backend, task.reference, rate).embeddings
        self.fp = fp_embeddings

    def embed(self, gen: Any) -> np.ndarray:
        return self.task.backend.embed(gen.data, gen.sample_rate, allow_silent=True)

    def __call__(self, model: torch.nn.Module, seeds: list[int] | None = None) -> dict[str, float]:
        attr = self.task.entry.denoiser_attr
        fp_model = getattr(self.task.pipe, attr)
        setattr(self.task.pipe, attr, model)
        t0 = time.perf_counter()
        try:
            gen = self.task.generate(self.task.eval_inputs, seeds or self.task.eval_seeds)
        finally:
            setattr(self.task.pipe, attr, fp_model)
        gen_s = time.perf_counter() - t0
        emb = self.embed(gen)
        fd_ref = frechet_distance_from_embeddings(emb, self.ref)
        fd_fp = frechet_distance_from_embeddings(emb, self.fp)
        return {"fd_vs_ref": fd_ref, "fd_vs_fp": fd_fp, "generate_s": gen_s, "seconds": time.perf_counter() - t0}


def sample_genomes(cache: dict[tuple[int, ...], float], count: int) -> list[tuple[int, ...]]:
    """``count`` evaluated genomes spread evenly over the proxy-fitness ranking (best and worst included)."""
    ranked = sorted(cache, key=lambda g: cache[g])
    if len(ranked) <= count:
        return ranked
    idx = np.unique(np.round(np.linspace(0, len(ranked) - 1, count)).astype(int))
    return [ranked[i] for i in idx]


def run_model(task: Task, args: argparse.Namespace, cache: ReferenceCache, log) -> dict[str, Any]:
    denoiser = getattr(task.pipe, task.entry.denoiser_attr)
    recipe = Recipe(w_bits=4, a_bits=8, method="qdit", search=True, seed=0)
    cfg = base_config(recipe)
    search = app_search_config(recipe)

    t0 = time.perf_counter()
    captured = capture_calls(denoiser, task.calibrate)
    capture_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bank = LayerBank(denoiser, cfg, search.choices)
    bank_s = time.perf_counter() - t0
    replay = captured.subset(2)
    t0 = time.perf_counter()
    result = evolutionary_search(denoiser, cfg, proxy_fitness(replay), search, bank=bank)
    search_s = time.perf_counter() - t0
    proxy_total = capture_s + bank_s + search_s
    evals = result.state.evaluations
    log(f"[{task.name}] proxy search: {len(bank.layers)} layers, {evals} evaluations, capture {capture_s:.1f}s + "
        f"bank {bank_s:.1f}s + search {search_s:.1f}s = {proxy_total:.1f}s; best proxy {result.fitness:.5f}")

    t0 = time.perf_counter()
    fp = task.generate(task.eval_inputs, task.eval_seeds)
    fp_gen_s = time.perf_counter() - t0
    fp_floor = task.generate(task.eval_inputs, task.floor_seeds)
    metric = MetricFitness(task, cache, fp_embeddings=np.zeros(0))
    fp_emb = metric.embed(fp)
    metric.fp = fp_emb
    floor_emb = metric.embed(fp_floor)
    fp_vs_ref = frechet_distance_from_embeddings(fp_emb, metric.ref)
    floor_vs_ref = frechet_distance_from_embeddings(floor_emb, metric.ref)
    floor_vs_fp = frechet_distance_from_embeddings(floor_emb, fp_emb)
    log(f"[{task.name}] FP: FD vs real {fp_vs_ref:.3f}; other seeds: vs real {floor_vs_ref:.3f}, "
        f"vs FP {floor_vs_fp:.3f}")

    genomes = sample_genomes(result.state.cache, args.genomes)
    work = copy.deepcopy(denoiser)
    rows = []
    for g in genomes:
        m = metric(bank.assemble(g, work))
        rows.append({"genome": list(g), "mean_group": float(np.mean(g)), "proxy": result.state.cache[g],
                     "stored_bytes": bank.stored_bytes(g), **m})
        log(f"[{task.name}] genome mean group {np.mean(g):.1f}: proxy {result.state.cache[g]:.5f} "
            f"FD vs real {m['fd_vs_ref']:.3f} FD vs FP {m['fd_vs_fp']:.3f} ({m['seconds']:.1f}s)")
    best_other = metric(bank.assemble(result.genome, work), seeds=task.floor_seeds)
    best_row = next((r for r in rows if tuple(r["genome"]) == result.genome), None)
    proxies = [r["proxy"] for r in rows]
    out_rank = {}
    for key in ("fd_vs_ref", "fd_vs_fp"):
        rho, p = spearmanr(proxies, [r[key] for r in rows])
        out_rank[key] = {"rho": float(rho), "p": float(p)}
    one_eval = float(np.mean([r["seconds"] for r in rows]))
    return {
        "model": task.name, "n_eval": len(task.eval_inputs), "steps": task.steps,
        "search": {"choices": list(search.choices), "population": search.population,
                   "generations": search.generations, "min_mean_group": search.min_mean_group, "seed": search.seed,
                   "layers": len(bank.layers), "calls_captured": len(captured), "calls_replayed": len(replay)},
        "proxy": {"capture_s": capture_s, "bank_s": bank_s, "search_s": search_s, "total_s": proxy_total,
                  "evaluations": evals, "per_evaluation_s": search_s / max(evals, 1),
                  "best_fitness": result.fitness, "best_genome": list(result.genome),
                  "best_mean_group": float(np.mean(result.genome)), "summary": search_summary(result)},
        "metric": {"one_evaluation_s": one_eval, "fp_generation_s": fp_gen_s,
                   "extrapolated_search_s": one_eval * evals,
                   "extrapolated_paper_search_s": one_eval * PAPER_EVALUATIONS,
                   "ratio_to_proxy_evaluation": one_eval / max(search_s / max(evals, 1), 1e-9)},
        "fp_fd_vs_ref": fp_vs_ref, "noise_floor_fd_fp2_vs_ref": floor_vs_ref, "noise_floor_fd_fp2_vs_fp": floor_vs_fp,
        "best_genome_other_seeds": {"fd_vs_ref": best_other["fd_vs_ref"], "fd_vs_fp": best_other["fd_vs_fp"],
                                    "same_seeds": None if best_row is None else
                                    {"fd_vs_ref": best_row["fd_vs_ref"], "fd_vs_fp": best_row["fd_vs_fp"]}},
        "spearman": out_rank, "genomes": rows,
    }


def _f(v: Any, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def to_markdown(env: dict, results: list[dict], args: argparse.Namespace, total_s: float, cpu_s: float) -> str:
    lines = ["# bench.qdit_search — Q-DiT group-size search: proxy vs metric fitness", "",
             f"`python -m bench.qdit_search {' '.join(args.argv)}`".replace(" `", "`"), "",
             f"torch {env['torch']}, {env['threads']} thread(s), {env['cpu_capability']}; W4A8 (Q-DiT: group-wise "
             "weights, sample-wise dynamic group activations), the app's search settings. Metric fitness = FD of "
             f"{args.n} samples per class / kind ({args.steps} steps) on the embedded classifiers' 128-d features "
             f"(FID for tiny-digits, FAD for tiny-sounds). Whole bench: {total_s / 60:.1f} min wall clock, "
             f"{cpu_s / 60:.1f} min CPU (process time; the 2-core machine was shared with other jobs).", "",
             "| model | layers | proxy search: evals | capture s | bank s | search s | total s | per eval s | "
             "ONE metric eval s | metric search, same evals (extrapolated) | paper-size metric search (500 evals) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p, m = r["proxy"], r["metric"]
        lines.append(
            f"| {r['model']} | {r['search']['layers']} | {p['evaluations']} | {p['capture_s']:.1f} | "
            f"{p['bank_s']:.1f} | {p['search_s']:.1f} | {p['total_s']:.1f} | {p['per_evaluation_s']:.2f} | "
            f"{m['one_evaluation_s']:.1f} | {m['extrapolated_search_s'] / 60:.1f} min | "
            f"{m['extrapolated_paper_search_s'] / 3600:.1f} h |")
    lines += ["", "## Rank agreement (Spearman) between proxy and metric fitness", "",
              "| model | genomes | ρ (proxy vs FD vs real) | p | ρ (proxy vs FD vs FP samples) | p | "
              "FP FD vs real | noise: FP other seeds vs real | noise: best genome other seeds vs real |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["spearman"]
        lines.append(
            f"| {r['model']} | {len(r['genomes'])} | {s['fd_vs_ref']['rho']:+.3f} | {s['fd_vs_ref']['p']:.3f} | "
            f"{s['fd_vs_fp']['rho']:+.3f} | {s['fd_vs_fp']['p']:.3f} | {_f(r['fp_fd_vs_ref'])} | "
            f"{_f(r['noise_floor_fd_fp2_vs_ref'])} | {_f(r['best_genome_other_seeds']['fd_vs_ref'])} |")
    for r in results:
        lines += ["", f"### {r['model']}: sampled genomes (evenly spaced by proxy rank)", "",
                  "| mean group | proxy (rel. MSE) | FD vs real | FD vs FP samples | stored KB | metric eval s |",
                  "|---|---|---|---|---|---|"]
        for g in r["genomes"]:
            lines.append(f"| {g['mean_group']:.1f} | {g['proxy']:.5f} | {g['fd_vs_ref']:.3f} | {g['fd_vs_fp']:.3f} | "
                         f"{g['stored_bytes'] / 1024:.1f} | {g['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-digits", "tiny-sounds"])
    ap.add_argument("--n", type=int, default=13, help="samples per class / kind for the metric (>= 13: FD needs 129)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--genomes", type=int, default=8, help="genomes scored by both fitnesses")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="qdit_search")
    args = ap.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    torch.set_num_threads(args.threads)
    env = environment()
    cache = ReferenceCache()
    t0, c0 = time.perf_counter(), time.process_time()
    results = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    for name in args.models:
        task = digits_task(args.n, args.steps) if name == "tiny-digits" else sounds_task(args.n, args.steps)
        results.append(run_model(task, args, cache, log))
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        write_results(args.out, {"environment": env, "args": vars(args), "total_s": total, "total_cpu_s": cpu,
                                 "results": results}, to_markdown(env, results, args, total, cpu))
    print(to_markdown(env, results, args, time.perf_counter() - t0, time.process_time() - c0))
    print(json.dumps({"written": str(RESULTS / f"{args.out}.md")}))


if __name__ == "__main__":
    main()
