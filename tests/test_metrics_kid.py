"""KID: the unbiased MMD^2 on a hand-computed case, and unbiasedness in expectation."""

from __future__ import annotations

import numpy as np
import pytest

from backend.metrics import MetricError, kernel_inception_distance, mmd2_unbiased
from backend.metrics.kid import polynomial_kernel, rms_scale


def test_mmd2_unbiased_hand_example():
    # d = 2, k(a, b) = (a.b / 2 + 1)^3
    # x = (1,0),(0,1): x1.x2 = 0 -> k = 1; off-diagonal mean = 1
    # y = (1,1),(0,0): y1.y2 = 0 -> k = 1; off-diagonal mean = 1
    # k(x, y): dots 1, 0, 1, 0 -> 1.5^3, 1, 1.5^3, 1 -> mean (2*3.375 + 2) / 4 = 2.1875
    # MMD^2_u = 1 + 1 - 2 * 2.1875 = -2.375
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert polynomial_kernel(x, y)[0, 0] == pytest.approx(3.375)
    assert mmd2_unbiased(x, y) == pytest.approx(-2.375)


def test_unbiased_in_expectation_where_the_biased_estimate_is_not():
    rng = np.random.default_rng(0)
    draws, n, d = 1500, 8, 3
    unbiased, biased = np.empty(draws), np.empty(draws)
    for i in range(draws):
        x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        unbiased[i] = mmd2_unbiased(x, y)
        biased[i] = (
            polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean()
            - 2 * polynomial_kernel(x, y).mean()
        )
    se = unbiased.std() / np.sqrt(draws)
    assert abs(unbiased.mean()) < 4 * se
    # the V-statistic (diagonal included) is biased upward: the test can tell them apart
    assert biased.mean() > 10 * biased.std() / np.sqrt(draws)


def test_kid_separates_distributions_and_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 6))
    same = rng.standard_normal((100, 6))
    shifted = rng.standard_normal((100, 6)) + 0.8
    k_same = kernel_inception_distance(x, same, num_subsets=20, subset_size=50, seed=0)
    k_diff = kernel_inception_distance(x, shifted, num_subsets=20, subset_size=50, seed=0)
    assert k_diff.mean > k_same.mean + 5 * k_diff.std / np.sqrt(20)
    assert abs(k_same.mean) < 3 * k_same.std
    assert k_diff.subset_size == 50 and (k_diff.n_x, k_diff.n_y) == (120, 100)
    again = kernel_inception_distance(x, shifted, num_subsets=20, subset_size=50, seed=0)
    assert again.mean == k_diff.mean


def test_kid_subset_clamped_to_smallest_set_and_errors():
    rng = np.random.default_rng(2)
    res = kernel_inception_distance(rng.standard_normal((5, 3)), rng.standard_normal((9, 3)))
    assert res.subset_size == 5
    with pytest.raises(MetricError, match="at least 2"):
        kernel_inception_distance(np.ones((1, 3)), np.ones((4, 3)))
    with pytest.raises(MetricError, match="dimensions differ"):
        kernel_inception_distance(np.ones((4, 3)), np.ones((4, 2)))


def test_feature_scale_divides_both_sets_and_rms_scale_by_hand():
    # dividing both sets by c is the same as passing feature_scale=c
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((30, 5)) * 10, rng.standard_normal((30, 5)) * 10 + 3
    a = kernel_inception_distance(x, y, num_subsets=5, subset_size=20, seed=1, feature_scale=10)
    b = kernel_inception_distance(x / 10, y / 10, num_subsets=5, subset_size=20, seed=1)
    assert a.mean == pytest.approx(b.mean) and a.feature_scale == 10
    # RMS of entries (3, 4) and (0, 0): sqrt((9 + 16 + 0 + 0) / 4) = 2.5
    assert rms_scale(np.array([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(2.5)
    with pytest.raises(MetricError, match="positive"):
        kernel_inception_distance(x, y, feature_scale=0.0)
