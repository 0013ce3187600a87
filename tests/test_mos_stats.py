"""Listening-test statistics against values worked out by hand (issue 7)."""

import math

import numpy as np
import pytest

from backend.mos import stats


def test_mean_ci_matches_hand_computation():
    # ratings 3,4,5,4,4: mean 4; squared deviations 1,0,1,0,0 -> s^2 = 2/4, s = 0.70711
    # t_{0.975, 4} = 2.7764 (Student-t table) -> half width 2.7764 * 0.70711 / sqrt(5) = 0.87798
    ci = stats.mean_ci([3, 4, 5, 4, 4])
    assert ci["n"] == 5
    assert ci["mean"] == pytest.approx(4.0)
    assert ci["sd"] == pytest.approx(math.sqrt(0.5))
    assert ci["half_width"] == pytest.approx(2.7764 * math.sqrt(0.5) / math.sqrt(5), abs=1e-4)
    assert ci["ci_low"] == pytest.approx(4 - 0.87798, abs=1e-4)
    assert ci["ci_high"] == pytest.approx(4 + 0.87798, abs=1e-4)


def test_mean_ci_two_values_uses_wide_t():
    # n = 2: t_{0.975, 1} = 12.706; s = sqrt(2) for (1, 3); half = 12.706 * sqrt(2) / sqrt(2)
    ci = stats.mean_ci([1, 3])
    assert ci["half_width"] == pytest.approx(12.706, abs=1e-3)
    assert math.isnan(stats.mean_ci([4])["half_width"])


def _rows(cond, per_rater):
    return [{"rater_id": f"r{i}", "cond_id": cond, "trial_kind": "rate", "value": v}
            for i, v in enumerate(per_rater)]


def test_wilcoxon_exact_p_by_enumeration():
    # differences a - b per rater: 1, 2, 3, 4, -5 -> W+ = 1+2+3+4 = 10, W- = 5, T = min = 5.
    # Of the 2^5 = 32 equally likely sign patterns, those with rank sum <= 5 are
    # {}, {1}, {2}, {3}, {4}, {5}, {1,2}, {1,3}, {1,4}, {2,3}: 10 -> two-sided p = 2 * 10/32.
    a = [11, 12, 13, 14, 10]
    b = [10, 10, 10, 10, 15]
    rows = _rows("a", a) + _rows("b", b)
    (pair,) = stats.wilcoxon_pairs(rows, ["a", "b"])
    assert pair["n_raters"] == 5
    assert pair["statistic"] == pytest.approx(5)
    assert pair["p"] == pytest.approx(20 / 32)
    # all five differences positive: only the empty set has rank sum 0 -> p = 2 * 1/32
    rows = _rows("a", [2, 3, 4, 5, 6]) + _rows("b", [1, 1, 1, 1, 1])
    assert stats.wilcoxon_pairs(rows, ["a", "b"])[0]["p"] == pytest.approx(2 / 32)


def test_wilcoxon_uses_per_rater_means():
    # rater r0 rates "a" twice (2 and 4 -> mean 3): the test must see one value per rater
    rows = _rows("a", [3, 3, 4, 5, 6]) + _rows("b", [1, 1, 1, 1, 1])
    rows[0]["value"] = 2
    rows.append({"rater_id": "r0", "cond_id": "a", "trial_kind": "rate", "value": 4})
    means = stats.per_rater_means(rows)
    assert means["a"]["r0"] == pytest.approx(3)
    assert stats.wilcoxon_pairs(rows, ["a", "b"])[0]["n_raters"] == 5


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone max 0.06)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # capped at 1 and monotone: 0.5 x2 = 1.0, then 0.6 x1 = 0.6 -> 1.0
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    out = stats.holm([0.02, math.nan])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1])


def test_mushra_post_screening_constructed_case():
    def ref_rows(rater, values, kind="rate"):
        return [{"rater_id": rater, "cond_id": "fp", "trial_kind": kind, "value": v}
                for v in values]

    rows = (ref_rows("keep", [100] * 9 + [80])            # 1/10 = 10 % below 90 -> kept
            + ref_rows("drop", [100] * 8 + [85, 60])       # 2/10 = 20 % -> excluded
            + ref_rows("edge", [95] * 17 + [10, 20, 30])   # 3/20 = 15 %, not MORE than -> kept
            + ref_rows("keep", [0, 0, 0], kind="attention")  # attention trials do not count
            + [{"rater_id": "drop", "cond_id": "x", "trial_kind": "rate", "value": 0}])
    s = stats.mushra_screening(rows, "fp")
    assert s["keep"]["n_trials"] == 10 and s["keep"]["fraction_below"] == pytest.approx(0.1)
    assert not s["keep"]["excluded"]
    assert s["drop"]["excluded"] and s["drop"]["n_below"] == 2
    assert s["edge"]["fraction_below"] == pytest.approx(0.15) and not s["edge"]["excluded"]
    # with a threshold of 80 only the 60 counts for "drop": 1/10 -> kept
    assert stats.mushra_screening(rows, "fp", threshold=80)["drop"]["excluded"] is False


def test_bradley_terry_two_items():
    # i beat j 3 times, j beat i once: the BT likelihood is maximal at p_i / (p_i + p_j) = 3/4
    p = stats.bradley_terry(np.array([[0, 3], [1, 0]]))
    assert p[0] / (p[0] + p[1]) == pytest.approx(0.75, abs=1e-3)


def test_bradley_terry_three_items_consistent_with_ratios():
    # 30 comparisons per pair with wins exactly n * s_i / (s_i + s_j) for strengths 4:2:1:
    # the MLE then reproduces 4/7, 2/7, 1/7 (up to the tiny prior)
    s = np.array([4.0, 2.0, 1.0])
    n = 30
    w = np.array([[0, n * s[0] / (s[0] + s[1]), n * s[0] / (s[0] + s[2])],
                  [n * s[1] / (s[1] + s[0]), 0, n * s[1] / (s[1] + s[2])],
                  [n * s[2] / (s[2] + s[0]), n * s[2] / (s[2] + s[1]), 0]])
    p = stats.bradley_terry(w)
    assert p == pytest.approx(s / s.sum(), abs=1e-3)
