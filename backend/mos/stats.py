"""Statistics of listening tests: MOS with t-based CIs, MUSHRA post-screening, paired tests.

Why these choices: with the handful of raters of a lab test the normal approximation is too
narrow, so CIs come from Student's t (ITU-T P.1401). Ratings of one rater are not independent,
so conditions are compared on per-rater means with a paired, rank-based test (Wilcoxon
signed-rank) and the family of pairwise tests is corrected with Holm's step-down method.
MUSHRA post-screening follows ITU-R BS.1534-3 section 4.1.2.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

import numpy as np
from scipy import stats as st


def mean_ci(values: list[float] | np.ndarray, confidence: float = 0.95) -> dict:
    """Mean and the two-sided ``confidence`` interval ``mean +- t_{n-1} * s / sqrt(n)``."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n == 0:
        return {
            "n": 0,
            "mean": math.nan,
            "sd": math.nan,
            "half_width": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
        }
    mean = float(x.mean())
    if n == 1:
        return {
            "n": 1,
            "mean": mean,
            "sd": math.nan,
            "half_width": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
        }
    sd = float(x.std(ddof=1))
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "half_width": half,
        "ci_low": mean - half,
        "ci_high": mean + half,
    }


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (monotone, capped at 1); NaN stays NaN."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    order = sorted(idx, key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mushra_screening(
    rows: list[dict], reference: str, threshold: float = 90.0, max_fraction: float = 0.15
) -> dict[str, dict]:
    """Per rater: share of trials with the hidden reference rated below ``threshold``.

    A rater is excluded when that share is strictly above ``max_fraction`` (BS.1534-3: "more
    than 15 % of the test items"). Only ordinary trials count, not attention checks.
    """
    per: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["trial_kind"] == "rate" and r["cond_id"] == reference:
            per[r["rater_id"]].append(float(r["value"]))
    out = {}
    for rater, vals in per.items():
        low = sum(v < threshold for v in vals)
        frac = low / len(vals)
        out[rater] = {
            "n_trials": len(vals),
            "n_below": low,
            "fraction_below": frac,
            "excluded": frac > max_fraction,
        }
    return out


def per_rater_means(rows: list[dict]) -> dict[str, dict[str, float]]:
    """cond_id -> rater_id -> mean rating of that rater for that condition."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["cond_id"]][r["rater_id"]].append(float(r["value"]))
    return {c: {k: float(np.mean(v)) for k, v in d.items()} for c, d in acc.items()}


def wilcoxon_pairs(rows: list[dict], cond_ids: list[str]) -> list[dict]:
    """Wilcoxon signed-rank on per-rater means for every pair, Holm-corrected.

    Only raters who rated both conditions enter a pair. Zero differences are dropped
    (Wilcoxon's convention); a pair with fewer than 1 non-zero difference gets p = NaN.
    """
    means = per_rater_means(rows)
    out = []
    for a, b in combinations(cond_ids, 2):
        raters = sorted(set(means.get(a, {})) & set(means.get(b, {})))
        x = np.array([means[a][r] for r in raters])
        y = np.array([means[b][r] for r in raters])
        diff = x - y
        nz = int(np.count_nonzero(diff))
        if nz == 0:
            stat, p = math.nan, math.nan
        else:
            res = st.wilcoxon(x, y)
            stat, p = float(res.statistic), float(res.pvalue)
        out.append(
            {
                "a": a,
                "b": b,
                "n_raters": len(raters),
                "mean_diff": float(diff.mean()) if len(raters) else math.nan,
                "statistic": stat,
                "p": p,
            }
        )
    for row, p_adj in zip(out, holm([r["p"] for r in out])):
        row["p_holm"] = p_adj
    return out


def bradley_terry(wins: np.ndarray, iters: int = 1000, tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths (sum 1) from ``wins[i, j]`` = times i was preferred over j.

    Hunter's (2004) MM algorithm; a tiny prior win against every other item keeps a never-
    winning condition at a finite strength.
    """
    w = np.asarray(wins, dtype=float) + 1e-3 * (1 - np.eye(len(wins)))
    n = w + w.T
    p = np.full(len(w), 1.0 / len(w))
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = w.sum(axis=1) / denom
        new /= new.sum()
        if np.abs(new - p).max() < tol:
            p = new
            break
        p = new
    return p


def ab_table(rows: list[dict], cond_ids: list[str], n_boot: int = 200, seed: int = 0) -> list[dict]:
    """Bradley-Terry strength per condition with a 95 % bootstrap CI over raters."""
    index = {c: i for i, c in enumerate(cond_ids)}
    by_trial: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["trial_kind"] == "rate":
            by_trial[(r["rater_id"], r["trial_index"])].append(r)
    per_rater: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((len(cond_ids),) * 2))
    for (rater, _), pair in by_trial.items():
        if len(pair) != 2:
            continue
        win = next((x for x in pair if x["value"] == 1), None)
        lose = next((x for x in pair if x["value"] == 0), None)
        if win and lose:
            per_rater[rater][index[win["cond_id"]], index[lose["cond_id"]]] += 1
    raters = sorted(per_rater)
    if not raters:
        return []
    total = sum(per_rater.values())
    strength = bradley_terry(total)
    rng = np.random.default_rng(seed)
    boots = np.array(
        [
            bradley_terry(
                sum(per_rater[raters[i]] for i in rng.integers(len(raters), size=len(raters)))
            )
            for _ in range(n_boot)
        ]
    )
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    return [
        {
            "cond_id": c,
            "strength": float(strength[i]),
            "ci_low": float(lo[i]),
            "ci_high": float(hi[i]),
            "wins": float(total[i].sum()),
            "comparisons": float(total[i].sum() + total[:, i].sum()),
        }
        for c, i in index.items()
    ]
