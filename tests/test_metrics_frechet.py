"""Fréchet distance against closed forms computed by hand, and its guards."""

from __future__ import annotations

import numpy as np
import pytest

from backend.metrics import (
    GaussianStats,
    MetricError,
    fit_gaussian,
    frechet_distance,
    frechet_distance_from_embeddings,
    frechet_distance_inf,
    frechet_distance_with_ci,
)


def samples_with_exact_stats(mu: np.ndarray, sigma: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n samples whose sample mean and (unbiased) covariance are exactly mu and sigma."""
    z = np.random.default_rng(seed).standard_normal((n, len(mu)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(sigma).T + mu


# mu1=(1,2), S1=diag(4,9); mu2=0, S2=I:
# |mu1-mu2|^2 = 1 + 4 = 5; per dim s1 + s2 - 2 sqrt(s1 s2): 4+1-4 = 1 and 9+1-6 = 4 -> FD 10
MU1, S1 = np.array([1.0, 2.0]), np.diag([4.0, 9.0])
MU2, S2 = np.zeros(2), np.eye(2)
FD_BY_HAND = 10.0


def test_fd_of_diagonal_gaussians_matches_hand_value():
    fd = frechet_distance(GaussianStats(MU1, S1, 100), GaussianStats(MU2, S2, 100))
    assert fd == pytest.approx(FD_BY_HAND, abs=1e-9)


def test_fd_is_rotation_invariant_for_full_covariances():
    # rotating both Gaussians by the same R leaves FD unchanged (= the hand value above)
    t = 0.7
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a = GaussianStats(r @ MU1, r @ S1 @ r.T, 100)
    b = GaussianStats(r @ MU2, r @ S2 @ r.T, 100)
    assert frechet_distance(a, b) == pytest.approx(FD_BY_HAND, abs=1e-8)


def test_fd_from_embeddings_equals_closed_form():
    x = samples_with_exact_stats(MU1, S1, 500, seed=1)
    y = samples_with_exact_stats(MU2, S2, 700, seed=2)
    stats = fit_gaussian(x)
    np.testing.assert_allclose(stats.mu, MU1, atol=1e-10)
    np.testing.assert_allclose(stats.sigma, S1, atol=1e-10)
    assert frechet_distance_from_embeddings(x, y) == pytest.approx(FD_BY_HAND, abs=1e-8)


def test_fd_self_symmetry_and_scaling():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8))
    y = rng.standard_normal((300, 8)) * 1.5 + 0.3
    assert frechet_distance_from_embeddings(x, x) == pytest.approx(0.0, abs=1e-8)
    fxy = frechet_distance_from_embeddings(x, y)
    assert fxy > 1.0
    assert frechet_distance_from_embeddings(y, x) == pytest.approx(fxy, rel=1e-8)
    assert frechet_distance_from_embeddings(3.0 * x, 3.0 * y) == pytest.approx(9.0 * fxy, rel=1e-8)


def test_too_few_samples_says_not_full_rank_and_suggests_kid():
    x = np.random.default_rng(0).standard_normal((10, 10))
    with pytest.raises(MetricError, match="not full rank.*KID"):
        fit_gaussian(x)


def test_large_imaginary_part_is_an_error_not_dropped():
    # S1 = diag(1, -1) is no covariance: sqrt(S1 S2) = diag(1, i) has a large imaginary part
    bad = GaussianStats(np.zeros(2), np.diag([1.0, -1.0]), 10)
    with pytest.raises(MetricError, match="imaginary"):
        frechet_distance(bad, GaussianStats(np.zeros(2), np.eye(2), 10))


def test_singular_covariance_stays_finite():
    # rank-1 covariances: sqrtm of the singular product; FD stays finite and matches
    # the closed form for commuting PSD matrices: tr(S1 + S2 - 2 sqrt(S1 S2)) = 1 + 1 - 2 = 0
    s = np.diag([1.0, 0.0])
    fd = frechet_distance(GaussianStats(np.zeros(2), s, 5), GaussianStats(np.zeros(2), s, 5))
    assert fd == pytest.approx(0.0, abs=1e-5)


def test_nan_and_shape_errors():
    x = np.ones((20, 3))
    x[4, 1] = np.nan
    with pytest.raises(MetricError, match="NaN"):
        fit_gaussian(x)
    with pytest.raises(MetricError, match="2-D"):
        fit_gaussian(np.ones(5))
    with pytest.raises(MetricError, match="dimensions differ"):
        frechet_distance(GaussianStats(MU1, S1, 5), GaussianStats(np.zeros(3), np.eye(3), 5))


def test_stats_save_load_roundtrip(tmp_path):
    stats = GaussianStats(MU1, S1, 123)
    stats.save(tmp_path / "s.npz")
    back = GaussianStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, MU1)
    np.testing.assert_array_equal(back.sigma, S1)
    assert back.n == 123


def test_fd_with_ci_reports_counts_and_seeded_interval():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 4))
    y = rng.standard_normal((150, 4)) + 1.0  # FD ~ 4 (mean shift 1 in each of 4 dims)
    res = frechet_distance_with_ci(x, y, n_boot=50, seed=7)
    assert (res.n_x, res.n_y, res.dim) == (200, 150, 4)
    assert res.ci_low < res.value < res.ci_high
    assert 2.0 < res.value < 6.0
    again = frechet_distance_with_ci(x, y, n_boot=50, seed=7)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)
    assert frechet_distance_with_ci(x, y, n_boot=0).ci_low is None


def test_fd_inf_removes_most_of_the_small_sample_bias():
    # N(0, I) vs N(m, I) in 16-d with |m|^2 = 1: true FD = 1; FD at n = 40 is biased upward
    rng = np.random.default_rng(11)
    d = 16
    m = np.full(d, 0.25)
    x = rng.standard_normal((400, d))
    y = samples_with_exact_stats(m, np.eye(d), 4000, seed=12)
    res = frechet_distance_inf(x, y, num_points=6, repeats=4, min_n=40, seed=0)
    assert res.ns[0] == 40 and res.ns[-1] == 400
    assert res.fds[0] > res.fds[-1]  # the bias shrinks with n
    assert res.slope > 0
    assert abs(res.fd_inf - 1.0) < abs(res.fds[0] - 1.0) / 3
    with pytest.raises(MetricError, match="not full rank"):
        frechet_distance_inf(x, y, min_n=10)


def test_ci_holds_the_estimate_when_bootstrap_bias_is_large():
    # n=100 in 64-d: resamples with ~63 % distinct rows push every bootstrap FD far above the
    # estimate; a plain percentile interval would exclude it, the re-centred one must not
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((100, 64)), rng.standard_normal((100, 64)) + 0.1
    res = frechet_distance_with_ci(x, y, n_boot=40, seed=0)
    assert res.boot_bias > res.ci_high - res.ci_low  # the shift is larger than the interval
    assert res.ci_low <= res.value <= res.ci_high
