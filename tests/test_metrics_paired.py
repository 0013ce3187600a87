"""Paired FP-vs-quantized scores on hand-made signals and images with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from backend.metrics import (
    MetricError,
    log_spectral_distance,
    mel_cepstral_distortion,
    paired_audio_scores,
    paired_image_scores,
    psnr,
    snr_db,
    ssim,
)
from backend.metrics.paired import SSIM_K1, SSIM_K2, mcd_from_cepstra

SR = 16_000


def sine(n: int = SR * 2, freq: float = 440.0, amp: float = 1.0) -> np.ndarray:
    t = np.arange(n) / SR
    return amp * np.sin(2 * np.pi * freq * t)


def test_snr_of_sine_plus_noise_of_known_power():
    # sine of amplitude 1: power 1/2 (440 Hz, 2 s = 880 whole periods, so exactly 1/2);
    # noise rescaled to power exactly 0.01 -> SNR = 10 log10(0.5 / 0.01) = 16.9897 dB
    x = sine()
    noise = np.random.default_rng(0).standard_normal(len(x))
    noise *= np.sqrt(0.01 / np.mean(noise**2))
    assert snr_db(x, x + noise) == pytest.approx(10 * np.log10(0.5 / 0.01), abs=1e-9)
    # unscaled white noise of std 0.1 (power 0.01 in expectation): its measured power has
    # relative std sqrt(2/N), i.e. 10/ln10 * sqrt(2/N) dB; allow 4 of those
    raw = np.random.default_rng(1).normal(0.0, 0.1, len(x))
    tol = 4 * 10 / np.log(10) * np.sqrt(2 / len(x))
    assert snr_db(x, x + raw) == pytest.approx(10 * np.log10(0.5 / 0.01), abs=tol)
    assert snr_db(x, x) == float("inf")
    assert snr_db(np.zeros(10), np.ones(10)) == float("-inf")


def test_lsd_of_a_gain_change_is_the_gain_in_db():
    # every STFT bin scales by g^2 in power -> each log-power difference is 20 log10 g dB
    x = np.random.default_rng(2).standard_normal(SR) * 0.3
    g = 0.5
    assert log_spectral_distance(x, g * x) == pytest.approx(abs(20 * np.log10(g)), abs=1e-3)
    assert log_spectral_distance(x, x) == 0.0


def test_mcd_excludes_c0_so_a_gain_change_costs_nothing():
    # a gain adds 2 ln g to every log-mel band: with the orthonormal DCT only c0 moves
    x = np.random.default_rng(3).standard_normal(SR) * 0.3
    assert mel_cepstral_distortion(x, 0.25 * x, SR) == pytest.approx(0.0, abs=1e-3)
    other = sine(SR, 1000.0, 0.3) + 0.01 * x
    assert mel_cepstral_distortion(x, other, SR) > 1.0


def test_mcd_from_cepstra_hand_value():
    # two frames; frame 1 differs by (3, 4) in c1, c2 and by 100 in c0 (ignored); frame 2 equal
    # MCD = mean(10/ln10 * sqrt(2 * 25), 0) = 0.5 * 10/ln10 * sqrt(50)
    ref = np.zeros((3, 2))
    test = np.zeros((3, 2))
    test[:, 0] = [100.0, 3.0, 4.0]
    assert mcd_from_cepstra(ref, test) == pytest.approx(0.5 * 10 / np.log(10) * np.sqrt(50))


def test_psnr_of_constant_offset():
    # offset 0.1 everywhere: MSE 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    img = np.random.default_rng(4).uniform(0, 0.8, (1, 16, 16))
    assert psnr(img, img + 0.1) == pytest.approx(20.0)
    assert psnr(img, img + 0.1, data_range=2.0) == pytest.approx(20 * np.log10(2 / 0.1))


def test_ssim_identity_and_constant_images_by_hand():
    img = np.random.default_rng(5).uniform(0, 1, (16, 16))
    assert ssim(img, img) == pytest.approx(1.0)
    # constant images a, b: variances and covariance 0, so
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) * C2 / C2
    a, b = 0.2, 0.6
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert SSIM_K2 == 0.03
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected)
    noisy = img + np.random.default_rng(6).normal(0, 0.2, img.shape)
    assert 0.0 < ssim(img, noisy) < 0.9


def test_paired_image_scores_on_signed_batches():
    # batch in [-1, 1]: an offset of 0.2 there is 0.1 in [0, 1] -> PSNR 20 dB
    x = np.random.default_rng(7).uniform(-0.8, 0.6, (3, 1, 16, 16))
    out = paired_image_scores(x, x + 0.2)
    assert out["psnr_db"]["mean"] == pytest.approx(20.0)
    assert len(out["ssim"]["per_sample"]) == 3
    same = paired_image_scores(x, x)
    assert same["psnr_db"]["n_nonfinite"] == 3 and same["psnr_db"]["mean"] is None
    with pytest.raises(MetricError, match="equal image batches"):
        paired_image_scores(x, x[:2])


def test_paired_audio_scores_and_length_mismatch_note():
    x = sine(SR, 440.0, 0.5)
    noise = np.random.default_rng(8).standard_normal(SR)
    noise *= np.sqrt(0.125 / 100 / np.mean(noise**2))  # power 0.125 / 100 -> SNR 20 dB
    out = paired_audio_scores([x, x], [x + noise, (x + noise)[:-100]], SR)
    assert out["snr_db"]["per_sample"][0] == pytest.approx(20.0, abs=1e-6)
    assert out["lsd_db"]["mean"] > 0 and out["mcd_db"]["mean"] > 0
    assert any("cut to the shorter" in n for n in out["notes"])
    bad = x.copy()
    bad[10] = np.nan
    with pytest.raises(MetricError, match=r"quantized audio\[0\] contains NaN"):
        paired_audio_scores([x], [bad], SR)


def test_digital_silence_is_floored_at_80_db_below_the_peak():
    # FP clip: a tone then exact zeros. Anything more than 80 dB below its peak is "silence":
    # replacing the zeros by noise at -100 dBFS must not change LSD or MCD at all, whereas
    # with only the 1e-10 eps, log(1e-10) vs log(~4e-8) would move them by ~26 dB per bin.
    x = np.concatenate([sine(SR, 440.0, 0.5), np.zeros(SR)])
    whisper = x.copy()
    whisper[SR:] = np.random.default_rng(10).standard_normal(SR) * 1e-5
    y = x + np.random.default_rng(9).standard_normal(len(x)) * 1e-3
    # (rel 1e-4: the one frame straddling tone and silence sees the whisper above the floor)
    lsd = log_spectral_distance(x, y)
    assert log_spectral_distance(whisper, y) == pytest.approx(lsd, rel=1e-4)
    mcd = mel_cepstral_distortion(x, y, SR)
    assert mel_cepstral_distortion(whisper, y, SR) == pytest.approx(mcd, rel=1e-4)
    assert lsd > 1.0
