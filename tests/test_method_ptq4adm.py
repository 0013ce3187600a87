"""PTQ4ADM (arXiv 2409.13894): prompt augmentation, k-center selection and activation-aware
sample selection on cases small enough to check by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from backend.quant import ActStats, CalibrationRecord, QuantConfig, QuantError, quantize
from backend.quant.methods.ptq4adm import (
    augment_prompts,
    build_calibration_prompts,
    core_phrase,
    coverage_radius,
    is_well_formed,
    k_center_greedy,
    paraphrases,
    random_calibration_prompts,
    random_samples,
    range_coverage,
    record_from_samples,
    record_per_prompt,
    sample_ranges,
    select_covering_samples,
    union_ranges,
    with_loudness,
)

SEEDS = ["A low hum.", "a ticking clock", "the sound of people talking", "an electric buzzer"]


def bag_of_letters(prompts: list[str]) -> np.ndarray:
    """A deterministic stand-in text encoder: letter counts (a real embedding, just a crude one)."""
    out = np.zeros((len(prompts), 27))
    for i, p in enumerate(prompts):
        for ch in p:
            out[i, ord(ch) - 97 if "a" <= ch <= "z" else 26] += 1
    return out


# -- augmentation ---------------------------------------------------------------------------------

def test_rules_by_hand():
    assert core_phrase("The sound of a drum hit") == "a drum hit"
    assert with_loudness("a hum", "loud") == "a loud hum"
    assert with_loudness("an electric buzzer", "quiet") == "a quiet electric buzzer"
    assert with_loudness("people talking", "faint") == "faint people talking"
    assert sorted(paraphrases("someone talking loud")) == sorted(
        ["a person talking loud", "someone speaking loud", "someone talking strong"])
    assert is_well_formed("a low hum") and not is_well_formed("a  low hum")
    assert not is_well_formed("a {} hum") and not is_well_formed("a a hum") and not is_well_formed(" a hum")


def test_augmentation_is_well_formed_and_keeps_seeds():
    pool = augment_prompts(SEEDS)
    assert pool[:4] == ["a low hum", "a ticking clock", "the sound of people talking", "an electric buzzer"]
    assert len(pool) == len(set(pool))
    assert all(is_well_formed(p) for p in pool)
    # per seed 3 frames + 3 loudness + 6 scenes + 3 temporal = 15 variants, plus paraphrases, plus
    # 4 * 3 ordered mixture pairs; dedup may only remove ("the sound of people talking" is a seed)
    assert "a low hum followed by a ticking clock" in pool or "a low hum and a ticking clock" in pool
    assert "a loud ticking clock" in pool and "a deep hum" in pool and "people speaking" not in pool
    assert "the sound of people speaking" in pool
    assert 4 + 4 * 15 - 1 + 12 <= len(pool) <= 4 + 4 * 15 + 12 + 8


def test_augmentation_cap_keeps_seeds_and_depends_on_seed():
    a = augment_prompts(SEEDS, max_candidates=20, seed=0)
    b = augment_prompts(SEEDS, max_candidates=20, seed=1)
    assert len(a) == len(b) == 20 and a[:4] == b[:4] == augment_prompts(SEEDS)[:4]
    assert a == augment_prompts(SEEDS, max_candidates=20, seed=0) and a != b
    with pytest.raises(QuantError):
        augment_prompts(["  ", ""])


# -- k-center ------------------------------------------------------------------------------------

def test_k_center_on_a_line_picks_extremes_first():
    x = np.array([3.0, 0.0, 10.0, 4.0, 6.0, 9.0, 1.0])
    order = k_center_greedy(x, 4)
    # centroid 33/7 ~ 4.71: farthest is 10 (index 2, distance 5.29 vs 4.71 for 0), then 0
    # (index 1); then the point farthest from {0, 10}: 4 and 6 both at distance 4 from their
    # nearest -> lowest index (3, value 4)
    assert order[:2] == [2, 1]
    assert order[2] == 3
    # after {0, 10, 4}: distances 3->1, 6->2, 9->1, 1->1: next is 6 (index 4)
    assert order[3] == 4
    assert coverage_radius(x, x[order]) == pytest.approx(1.0)


def test_k_center_radius_beats_random_on_clusters():
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    # 4 clusters of very different sizes: 40, 3, 3, 3 points within 0.1 of a corner
    pts = np.concatenate([c + rng.uniform(-0.1, 0.1, (n, 2)) for c, n in zip(corners, (40, 3, 3, 3))])
    chosen = k_center_greedy(pts, 4)
    r_kc = coverage_radius(pts, pts[chosen])
    assert r_kc <= 2 * 0.1 * np.sqrt(2)  # one centre per cluster: at most one cluster diameter
    r_rand = [coverage_radius(pts, pts[np.random.default_rng(s).choice(len(pts), 4, replace=False)])
              for s in range(20)]
    assert all(r_kc <= r for r in r_rand)
    assert np.median(r_rand) >= 9.5  # a random 4 of 49 nearly always misses a small cluster


def test_k_center_rejects_bad_k():
    with pytest.raises(QuantError):
        k_center_greedy(np.zeros((3, 2)), 4)
    with pytest.raises(QuantError):
        k_center_greedy(np.zeros((3, 2)), 0)


def test_build_calibration_prompts_deterministic_and_from_pool():
    a = build_calibration_prompts(SEEDS, 8, bag_of_letters, seed=0)
    assert a == build_calibration_prompts(SEEDS, 8, bag_of_letters, seed=0)
    assert len(a) == len(set(a)) == 8
    pool = augment_prompts(SEEDS)
    assert set(a) <= set(pool)
    # its coverage radius over the pool (same normalised space) beats the typical random draw's
    # (k-center is a 2-approximation, so a lucky random draw may beat it: compare with the median)
    emb = bag_of_letters(pool)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    idx = {p: i for i, p in enumerate(pool)}
    r_kc = coverage_radius(emb, emb[[idx[p] for p in a]])
    r_rand = [coverage_radius(emb, emb[[idx[p] for p in random_calibration_prompts(SEEDS, 8, s)]])
              for s in range(5)]
    assert r_kc <= np.median(r_rand)
    r1 = random_calibration_prompts(SEEDS, 8, 1)
    assert r1 == random_calibration_prompts(SEEDS, 8, 1) and r1 != random_calibration_prompts(SEEDS, 8, 2)
    with pytest.raises(QuantError):
        build_calibration_prompts(SEEDS, 5, lambda ps: np.zeros((len(ps) - 1, 3)))


# -- activation-aware selection ------------------------------------------------------------------

def _stats(lo: float, hi: float) -> ActStats:
    return ActStats(count=2, calls=1, min=lo, max=hi, absmax=max(-lo, hi), sum=lo + hi, sumsq=lo * lo + hi * hi)


def made_up_records() -> list[CalibrationRecord]:
    """Three prompts, one timestep (500), two layers.

    layer a: [-1, 0.5], [-0.2, 2.0], [-0.5, 0.5]   -> union [-1, 2] (length 3)
    layer b: [0, 1],    [0, 1],      [-3, 0]        -> union [-3, 1] (length 4)
    """
    ranges = [((-1.0, 0.5), (0.0, 1.0)), ((-0.2, 2.0), (0.0, 1.0)), ((-0.5, 0.5), (-3.0, 0.0))]
    return [CalibrationRecord(layers={"a": {500: _stats(*a)}, "b": {500: _stats(*b)}}) for a, b in ranges]


def test_activation_aware_selection_by_hand():
    recs = made_up_records()
    ranges = sample_ranges(recs)
    assert sorted(ranges) == [(0, 500), (1, 500), (2, 500)]
    # single samples: s0 (1.5/3 + 1/4)/2 = 0.375; s1 (2.2/3 + 1/4)/2 = 0.4917; s2 (1/3 + 3/4)/2 = 0.5417
    assert range_coverage(ranges, [(2, 500)]) == pytest.approx((1 / 3 + 3 / 4) / 2)
    order = select_covering_samples(ranges, 3)
    # then with s2: +s0 -> (1.5/3 + 1)/2 = 0.75, +s1 -> (2.5/3 + 1)/2 = 0.9167 -> s1; then s0
    assert order == [(2, 500), (1, 500), (0, 500)]
    assert range_coverage(ranges, order[:2]) == pytest.approx((2.5 / 3 + 1) / 2)
    assert range_coverage(ranges, order) == pytest.approx(1.0)
    rec = record_from_samples(recs, order)
    assert rec.merged("a").min == -1.0 and rec.merged("a").max == 2.0
    assert rec.merged("b").min == -3.0 and rec.merged("b").max == 1.0
    assert union_ranges(ranges) == {"a": (-1.0, 2.0), "b": (-3.0, 1.0)}
    assert len(set(random_samples(ranges, 2, seed=0))) == 2


def test_covered_samples_fill_remaining_slots_by_width():
    recs = made_up_records() + [CalibrationRecord(layers={"a": {500: _stats(-1.0, 2.0)},
                                                          "b": {500: _stats(-3.0, 1.0)}})]
    ranges = sample_ranges(recs)
    order = select_covering_samples(ranges, 2)
    # sample 3 alone covers everything; the next slot goes to the widest remaining sample:
    # widths s0 (1.5/3 + 1/4)/2 = 0.375, s1 (2.2/3 + 1/4)/2 = 0.49, s2 (1/3 + 3/4)/2 = 0.54 -> s2
    assert order == [(3, 500), (2, 500)]


def test_real_recording_through_quantize():
    """record_per_prompt on a tiny conditioned MLP; the covering record sets the same static
    activation range as calibrating on every sample."""
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x * (1 + timestep / 1000))))

    model = Tiny().eval()
    conds = {p: torch.randn(3, 4) * s for p, s in (("p0", 0.5), ("p1", 2.0), ("p2", 1.0))}

    def run_one(p: str) -> None:
        with torch.no_grad():
            for t in (900, 100):
                model(conds[p], timestep=torch.tensor(float(t)))

    recs = record_per_prompt(model, list(conds), run_one, max_samples=64)
    ranges = sample_ranges(recs)
    assert len(ranges) == 6 and set(ranges[(0, 900)]) == {"fc1", "fc2"}
    chosen = select_covering_samples(ranges, 6)
    k = next(i for i in range(1, 7) if range_coverage(ranges, chosen[:i]) == pytest.approx(1.0))
    assert k <= 4  # each layer's min and max come from at most 2 samples
    sub = record_from_samples(recs, chosen[:k])
    full = record_from_samples(recs, list(ranges))
    for layer in ("fc1", "fc2"):
        assert sub.merged(layer).min == full.merged(layer).min and sub.merged(layer).max == full.merged(layer).max
    cfg = QuantConfig(w_bits=8, a_bits=8, skip=())
    qa, qb = Tiny().eval(), Tiny().eval()
    qa.load_state_dict(model.state_dict())
    qb.load_state_dict(model.state_dict())
    quantize(qa, cfg, calibration=sub)
    quantize(qb, cfg, calibration=full)
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(qa(x, torch.tensor(500.0)), qb(x, torch.tensor(500.0)))
