"""PTQ4ADM — post-training quantization for text-conditional audio diffusion models
(Vora et al., arXiv 2409.13894). qlisten's code is its own; what follows says which part of
the paper each piece stands for and where it differs.

* Sec. 3.1 "coverage-driven prompt augmentation". The paper grows a small set of seed
  captions into many candidates that vary the audio aspects a caption names (sound source,
  action, acoustic scene, loudness / distance, temporal pattern) and keeps the candidates
  that cover caption space, so calibration sees the conditioning the model will meet, not a
  few near-duplicates. The paper generates candidates with a language model; qlisten is
  offline, so :func:`augment_prompts` uses deterministic rules instead: prefix templates,
  attribute recombination (loudness, scene, distance, temporal pattern), word-level
  paraphrase rules and two-source mixtures ("X followed by Y"). Selection is greedy
  k-center (farthest-point) over text embeddings given by the caller
  (:func:`k_center_greedy`): it minimises the coverage radius — the largest distance from
  any candidate to its nearest chosen prompt — within a factor 2 of optimal.
  :func:`build_calibration_prompts` is the entry point the app calls;
  :func:`random_calibration_prompts` is the same-size random baseline from the same pool.
* Sec. 3.2 "activation-aware calibration set generation". Not all (prompt, timestep)
  samples are equally useful for static activation ranges: the ones that reach each layer's
  extremes decide min-max scales. From per-prompt recordings
  (:class:`backend.quant.calibration.CalibrationRecord`, one per candidate prompt) every
  (prompt, timestep) pair is a candidate sample with one ``[min, max]`` per layer;
  :func:`select_covering_samples` greedily adds the sample that most increases the mean over
  layers of the fraction of the pool's union range covered, and :func:`record_from_samples`
  merges the chosen samples into a calibration record for :func:`backend.quant.quantize`.
* Sec. 3.3 "selective quantization" (sensitive layers kept at higher precision) is the
  sensitivity-driven allocation of ``methods/mixed_precision.py``; ``recipes.py`` applies it
  for ``method="ptq4adm"`` when an average-bits budget is given.

Pure: no file I/O, no UI; the text encoder and the sampling loop come from the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from ..calibration import ActivationRecorder, CalibrationRecord, merge_stats
from ..errors import QuantError

# -- Sec. 3.1: rule-based augmentation --------------------------------------------------------

#: leading phrases that frame a caption without naming a sound; stripped to get its core
FRAMES: tuple[str, ...] = ("the sound of ", "a recording of ", "a clip of ", "sound of ", "audio of ")
#: templates that re-frame a core ("{}" = the core)
PREFIX_TEMPLATES: tuple[str, ...] = ("the sound of {}", "a recording of {}", "a clip of {}")
#: acoustic scene and distance (where the source is heard)
SCENES: tuple[str, ...] = (
    "{} in a small room", "{} in a large hall", "{} outdoors", "{} in the distance",
    "{} close to the microphone", "{} with background noise",
)
#: temporal pattern
TEMPORAL: tuple[str, ...] = ("{} repeated several times", "{} for a long time", "{} briefly")
#: loudness, put after the article
LOUDNESS: tuple[str, ...] = ("loud", "quiet", "faint")
#: two sources in one caption (AudioCaps-style multi-source captions)
MIXTURES: tuple[str, ...] = ("{} and {}", "{} followed by {}", "{} with {} in the background")
#: word-level paraphrase rules, applied in both directions, one substitution at a time
PARAPHRASES: tuple[tuple[str, str], ...] = (
    ("sound", "noise"), ("talking", "speaking"), ("hitting", "striking"), ("low", "deep"),
    ("rapid", "quick"), ("tone", "note"), ("machine", "device"), ("someone", "a person"),
    ("loud", "strong"), ("people", "a crowd"),
)
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
_WELL_FORMED = re.compile(r"^[a-z0-9][a-z0-9 ,'\-]*[a-z0-9]$")


def normalize_prompt(prompt: str) -> str:
    """Lower case, single spaces, no surrounding whitespace or trailing full stop."""
    return re.sub(r"\s+", " ", str(prompt)).strip().rstrip(".").strip().lower()


def is_well_formed(prompt: str) -> bool:
    """A caption the rules may emit: normalized, letters / digits / ``,'-`` and single spaces,
    no leftover template braces, no doubled word (``"a a"``), at most 24 words."""
    if prompt != normalize_prompt(prompt) or not _WELL_FORMED.match(prompt):
        return False
    words = prompt.split(" ")
    return len(words) <= 24 and all(a != b for a, b in zip(words, words[1:]))


def core_phrase(prompt: str) -> str:
    """A caption without its framing phrase ("the sound of a drum" -> "a drum")."""
    p = normalize_prompt(prompt)
    for frame in FRAMES:
        if p.startswith(frame) and len(p) > len(frame):
            return p[len(frame):]
    return p


def with_loudness(core: str, word: str) -> str:
    """Insert a loudness adjective after the article ("a hum" -> "a loud hum")."""
    m = _ARTICLE.match(core)
    if m is None:
        return f"{word} {core}"
    article = m.group(1).lower()
    if article in ("a", "an"):
        article = "an" if word[0] in "aeiou" else "a"
    return f"{article} {word} {core[m.end():]}"


def paraphrases(prompt: str) -> list[str]:
    """One-substitution paraphrases of ``prompt`` by :data:`PARAPHRASES` (whole words only)."""
    out: list[str] = []
    for a, b in PARAPHRASES:
        for src, dst in ((a, b), (b, a)):
            pat = re.compile(rf"\b{re.escape(src)}\b")
            if pat.search(prompt):
                out.append(pat.sub(dst, prompt, count=1))
    return out


def augment_prompts(
    seed_prompts: Sequence[str], *, max_candidates: int = 2000, mixtures: bool = True, seed: int = 0,
) -> list[str]:
    """Seed prompts first, then their rule-made variants; well-formed and deduplicated.

    Per seed: the seed, its re-framings, loudness / scene / temporal variants and
    paraphrases; then (with ``mixtures``) every ordered pair of different seed cores in one
    mixture template (the templates rotate over pairs). When the pool exceeds
    ``max_candidates`` the seeds stay and the rest is a seeded random subset (kept in
    generation order), so a pool is reproducible.
    """
    seeds = list(dict.fromkeys(normalize_prompt(p) for p in seed_prompts if normalize_prompt(p)))
    if not seeds:
        raise QuantError("prompt augmentation needs at least one non-empty seed prompt")
    variants: list[str] = []
    cores = list(dict.fromkeys(core_phrase(s) for s in seeds))
    for s in seeds:
        core = core_phrase(s)
        variants += [t.format(core) for t in PREFIX_TEMPLATES]
        variants += [with_loudness(core, w) for w in LOUDNESS]
        variants += [t.format(core) for t in SCENES + TEMPORAL]
        variants += paraphrases(s)
    if mixtures:  # one template per ordered pair, rotating, so mixtures do not swamp the pool
        variants += [MIXTURES[(i + j) % len(MIXTURES)].format(a, b)
                     for i, a in enumerate(cores) for j, b in enumerate(cores) if i != j]
    rest = [v for v in dict.fromkeys(normalize_prompt(v) for v in variants)
            if v not in set(seeds) and is_well_formed(v)]
    room = max_candidates - len(seeds)
    if room <= 0:
        return seeds
    if len(rest) > room:
        keep = np.sort(np.random.default_rng(seed).choice(len(rest), room, replace=False))
        rest = [rest[i] for i in keep]
    return seeds + rest


# -- Sec. 3.1: coverage-maximising selection ---------------------------------------------------

def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[:, None]
    if pts.ndim != 2 or pts.shape[0] == 0 or not np.isfinite(pts).all():
        raise QuantError("embeddings must be a finite (n, dim) array with n >= 1")
    return pts


def k_center_greedy(points: np.ndarray, k: int, *, first: int | None = None) -> list[int]:
    """Indices of ``k`` points chosen by farthest-point (greedy k-center) selection.

    The first centre is ``first`` or, by default, the point farthest from the centroid (an
    extreme, so the choice is deterministic); each next centre is the point farthest from
    all chosen ones (ties: lowest index). Gonzalez (1985): the coverage radius is at most
    twice the optimal k-center radius.
    """
    pts = _as_points(points)
    n = pts.shape[0]
    if not 1 <= k <= n:
        raise QuantError(f"k-center needs 1 <= k <= {n} (number of candidates), got k={k}")
    if first is None:
        first = int(np.argmax(np.linalg.norm(pts - pts.mean(0), axis=1)))
    chosen = [int(first)]
    dist = np.linalg.norm(pts - pts[first], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    return chosen


def nearest_center_distances(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest centre (rows of ``centers``)."""
    pts, ctr = _as_points(points), _as_points(centers)
    d2 = (pts**2).sum(1)[:, None] + (ctr**2).sum(1)[None, :] - 2.0 * pts @ ctr.T
    return np.sqrt(np.clip(d2.min(1), 0.0, None))


def coverage_radius(points: np.ndarray, centers: np.ndarray) -> float:
    """Largest distance from any point to its nearest centre (the k-center objective)."""
    return float(nearest_center_distances(points, centers).max())


def candidate_pool(seed_prompts: Sequence[str], seed: int = 0) -> list[str]:
    """The augmented pool both :func:`build_calibration_prompts` and the random baseline draw from."""
    return augment_prompts(seed_prompts, seed=seed)


def build_calibration_prompts(
    seed_prompts: list[str], k: int, embed: Callable[[list[str]], np.ndarray], *, seed: int = 0,
) -> list[str]:
    """``k`` calibration prompts: seeds augmented by rules, then k-center selected in text space.

    ``embed(prompts) -> (n, dim)`` is the model's text encoder (or any sentence encoder);
    embeddings are L2-normalised here, so distances are cosine geometry. Deterministic for a
    ``seed`` (it only picks the pool subset when the pool exceeds its cap).
    """
    pool = candidate_pool(seed_prompts, seed)
    emb = _as_points(embed(pool))
    if emb.shape[0] != len(pool):
        raise QuantError(f"embed returned {emb.shape[0]} rows for {len(pool)} prompts")
    emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    return [pool[i] for i in k_center_greedy(emb, k)]


def random_calibration_prompts(seed_prompts: list[str], k: int, seed: int = 0) -> list[str]:
    """The baseline: ``k`` prompts drawn uniformly without replacement from the same pool."""
    pool = candidate_pool(seed_prompts, seed)
    if not 1 <= k <= len(pool):
        raise QuantError(f"need 1 <= k <= {len(pool)} (pool size), got k={k}")
    idx = np.random.default_rng(seed).choice(len(pool), k, replace=False)
    return [pool[i] for i in idx]


# -- Sec. 3.2: activation-aware (prompt, timestep) selection ----------------------------------

SampleKey = tuple[int, int]  # (index of the prompt's record, timestep key)
Ranges = Mapping[SampleKey, Mapping[str, tuple[float, float]]]


def record_per_prompt(
    root: nn.Module, prompts: Sequence[Any], run_one: Callable[[Any], Any], **recorder_kwargs: Any,
) -> list[CalibrationRecord]:
    """One :class:`CalibrationRecord` per prompt: ``run_one(prompt)`` samples it with hooks on.

    ``recorder_kwargs`` go to :class:`ActivationRecorder` (keep ``max_samples`` small: the
    records of a whole pool stay in memory).
    """
    return [ActivationRecorder(root, **recorder_kwargs).run(lambda p=p: run_one(p)) for p in prompts]


def sample_ranges(records: Sequence[CalibrationRecord]) -> dict[SampleKey, dict[str, tuple[float, float]]]:
    """``(prompt index, timestep) -> {layer: (min, max)}`` from per-prompt records."""
    out: dict[SampleKey, dict[str, tuple[float, float]]] = {}
    for i, rec in enumerate(records):
        for layer, per_t in rec.layers.items():
            for t, s in per_t.items():
                if s.count:
                    out.setdefault((i, t), {})[layer] = (float(s.min), float(s.max))
    return out


def union_ranges(ranges: Ranges, keys: Iterable[SampleKey] | None = None) -> dict[str, tuple[float, float]]:
    """Per layer, ``[min of mins, max of maxes]`` over ``keys`` (default: all samples)."""
    out: dict[str, tuple[float, float]] = {}
    for key in ranges if keys is None else keys:
        for layer, (lo, hi) in ranges[key].items():
            a, b = out.get(layer, (lo, hi))
            out[layer] = (min(a, lo), max(b, hi))
    return out


def range_coverage(ranges: Ranges, selected: Iterable[SampleKey]) -> float:
    """Mean over layers of ``len(range of selected) / len(range of the whole pool)``.

    A layer whose pool range has zero length counts as covered once any sample is chosen.
    """
    full = union_ranges(ranges)
    got = union_ranges(ranges, list(selected))
    fracs = []
    for layer, (lo, hi) in full.items():
        if layer not in got:
            fracs.append(0.0)
        elif hi - lo <= 0:
            fracs.append(1.0)
        else:
            fracs.append((got[layer][1] - got[layer][0]) / (hi - lo))
    return float(np.mean(fracs)) if fracs else 0.0


def select_covering_samples(ranges: Ranges, k: int) -> list[SampleKey]:
    """Greedy choice of ``k`` samples that cover each layer's activation range of the pool.

    Each step adds the sample that most increases :func:`range_coverage` (ties: first key in
    sorted order). Once the union is covered (coverage 1) the remaining slots go to the
    samples with the widest normalised ranges — the most extreme remaining samples, which
    matter for percentile / MSE scale choices that look past min and max.
    """
    keys = sorted(ranges)
    if not 1 <= k <= len(keys):
        raise QuantError(f"need 1 <= k <= {len(keys)} (candidate samples), got k={k}")
    full = union_ranges(ranges)
    layers = sorted(full)
    span = np.array([full[n][1] - full[n][0] for n in layers])
    live = span > 0
    lo = np.full((len(keys), len(layers)), np.inf)
    hi = np.full((len(keys), len(layers)), -np.inf)
    col = {n: j for j, n in enumerate(layers)}
    for i, key in enumerate(keys):
        for n, (a, b) in ranges[key].items():
            lo[i, col[n]], hi[i, col[n]] = a, b

    def score(cur_lo: np.ndarray, cur_hi: np.ndarray) -> np.ndarray:
        seen = np.isfinite(cur_lo)
        with np.errstate(invalid="ignore"):
            frac = np.where(live, (cur_hi - cur_lo) / np.where(live, span, 1.0), 1.0)
        return np.where(seen, frac, 0.0).mean(-1)

    cur_lo = np.full(len(layers), np.inf)
    cur_hi = np.full(len(layers), -np.inf)
    free = np.ones(len(keys), dtype=bool)
    chosen: list[int] = []
    with np.errstate(invalid="ignore"):
        width = np.where(np.isfinite(lo), (hi - lo) / np.where(live, span, 1.0), 0.0).mean(1)
    while len(chosen) < k:
        cand_lo, cand_hi = np.minimum(cur_lo, lo), np.maximum(cur_hi, hi)
        gain = np.where(free, score(cand_lo, cand_hi), -np.inf)
        best = int(np.argmax(gain))
        if chosen and gain[best] <= score(cur_lo, cur_hi) + 1e-12:
            best = int(np.argmax(np.where(free, width, -np.inf)))
        chosen.append(best)
        free[best] = False
        cur_lo, cur_hi = np.minimum(cur_lo, lo[best]), np.maximum(cur_hi, hi[best])
    return [keys[i] for i in chosen]


def random_samples(ranges: Ranges, k: int, seed: int = 0) -> list[SampleKey]:
    """The baseline: ``k`` (prompt, timestep) samples drawn uniformly without replacement."""
    keys = sorted(ranges)
    if not 1 <= k <= len(keys):
        raise QuantError(f"need 1 <= k <= {len(keys)} (candidate samples), got k={k}")
    return [keys[i] for i in np.random.default_rng(seed).choice(len(keys), k, replace=False)]


def record_from_samples(records: Sequence[CalibrationRecord], selected: Iterable[SampleKey]) -> CalibrationRecord:
    """A calibration record holding only the chosen (prompt, timestep) samples, merged per
    (layer, timestep) — what :func:`backend.quant.quantize` takes as ``calibration``."""
    picked: dict[str, dict[int, list]] = {}
    for i, t in selected:
        for layer, per_t in records[i].layers.items():
            if t in per_t:
                picked.setdefault(layer, {}).setdefault(t, []).append(per_t[t])
    if not picked:
        raise QuantError("no statistics in the selected samples")
    first = records[0]
    layers = {layer: {t: merge_stats(items) for t, items in per_t.items()} for layer, per_t in picked.items()}
    return CalibrationRecord(layers=layers, percentiles=first.percentiles, bins=first.bins)
