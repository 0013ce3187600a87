"""Reference cache (content-keyed hit/miss) and the full FP-vs-quantized comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from backend.metrics import (
    ClassifierAudioEmbedding,
    ClassifierImageEmbedding,
    MetricError,
    ReferenceCache,
    compare_outputs,
    default_cache_dir,
)
from backend.models.sounds_classifier import SoundsClassifier

SR = 16_000


class PixelStats(nn.Module):
    """A real 4-d image embedding: mean, std, and two quadrant means of the grey image."""

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        h = images.shape[-1] // 2
        return torch.stack(
            [images.mean((1, 2)), images.std((1, 2)),
             images[:, :h, :h].mean((1, 2)), images[:, h:, h:].mean((1, 2))], dim=1
        )


class CountingBackend(ClassifierImageEmbedding):
    """The real wrapper, counting how often it embeds (to prove a cache hit does not)."""

    calls = 0

    def embed(self, items, sample_rate=None, allow_silent=False):
        type(self).calls += 1
        return super().embed(items, sample_rate, allow_silent)


def images(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(-0.8, 0.8, (n, 1, 16, 16)) + shift, -1, 1).astype(np.float32)


def test_reference_cache_hit_miss_on_content(tmp_path):
    backend = CountingBackend(PixelStats(), name="pixel-stats")
    cache = ReferenceCache(tmp_path)
    ref = images(40, 0)
    first = cache.get_or_compute(backend, ref)
    assert not first.from_cache and first.stats is not None and CountingBackend.calls == 1
    again = cache.get_or_compute(backend, ref.copy())
    assert again.from_cache and again.key == first.key and CountingBackend.calls == 1
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    changed = ref.copy()
    changed[7, 0, 3, 3] += 0.01  # one pixel of one image: a new entry, not stale stats
    third = cache.get_or_compute(backend, changed)
    assert not third.from_cache and third.key != first.key and CountingBackend.calls == 2
    # another backend name on the same data is another entry too
    other = ClassifierImageEmbedding(PixelStats(), name="pixel-stats-v2")
    assert cache.key(other, ref) != first.key
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QLISTEN_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "metrics"
    monkeypatch.delenv("QLISTEN_CACHE")
    assert default_cache_dir().parts[-3:] == (".qlisten", "cache", "metrics")


def test_image_comparison_orders_good_and_bad_and_is_json_ready(tmp_path):
    backend = ClassifierImageEmbedding(PixelStats(), name="pixel-stats")
    fp = images(60, 1)
    quantized = images(60, 1, shift=0.15)  # same seeds, brighter: a visible quantization error
    ref = images(80, 2)
    res = compare_outputs(fp, quantized, ref, backend,
                          cache=ReferenceCache(tmp_path), n_boot=20, kid_subsets=10)
    assert res.counts == {"fp": 60, "q": 60, "ref": 80} and res.dim == 4
    # KID features divided by the reference set's RMS entry, the same for all three pairs
    ref_rms = np.sqrt(np.mean(backend.embed(ref) ** 2))
    assert [k.feature_scale for k in res.kid.values()] == [pytest.approx(ref_rms)] * 3
    assert res.fd["q_vs_ref"].value > res.fd["fp_vs_ref"].value
    assert res.kid["q_vs_ref"].mean > res.kid["fp_vs_ref"].mean
    assert res.fd["q_vs_fp"].ci_low <= res.fd["q_vs_fp"].value <= res.fd["q_vs_fp"].ci_high
    assert res.paired["psnr_db"]["mean"] < 40 and 0 < res.paired["ssim"]["mean"] < 1
    out = json.loads(json.dumps(res.to_dict()))
    assert out["fd"]["fp_vs_ref"]["n_x"] == 60 and not out["reference_from_cache"]


def test_too_few_samples_falls_back_to_kid_and_says_so(tmp_path):
    backend = ClassifierImageEmbedding(PixelStats(), name="pixel-stats")
    res = compare_outputs(images(4, 1), images(4, 3), images(30, 2), backend,
                          cache=ReferenceCache(tmp_path), n_boot=0, kid_subsets=5)
    assert res.fd == {"fp_vs_ref": None, "q_vs_ref": None, "q_vs_fp": None}
    assert all(k.subset_size == 4 for k in res.kid.values())
    assert any("full-rank" in n and "KID" in n for n in res.notes)


def test_audio_comparison_resamples_reference_and_reports_silence(tmp_path):
    torch.manual_seed(0)
    backend = ClassifierAudioEmbedding(SoundsClassifier(labels=["a", "b"], embed_dim=8))
    rng = np.random.default_rng(0)
    fp = [rng.standard_normal(SR).astype(np.float32) * 0.1 for _ in range(12)]
    quantized = [c + rng.standard_normal(SR).astype(np.float32) * 0.01 for c in fp]
    quantized[3] = np.zeros(SR, dtype=np.float32)
    ref = [rng.standard_normal(22_050).astype(np.float32) * 0.1 for _ in range(12)]
    res = compare_outputs(fp, quantized, ref, backend, sample_rate=SR,
                          reference_sample_rate=22_050, cache=ReferenceCache(tmp_path),
                          n_boot=10, kid_subsets=5)
    assert res.counts == {"fp": 12, "q": 12, "ref": 12}
    assert all(v is not None for v in res.fd.values())
    assert any("22050 Hz" in n and "soxr_hq" in n for n in res.notes)
    assert any("1 of 12 quantized clips are silent" in n and "[3]" in n for n in res.notes)
    # paired SNR of the clips with noise at 1/10 amplitude: 20 dB; the silent one: 0 dB
    snr = res.paired["snr_db"]["per_sample"]
    assert snr[0] == pytest.approx(20.0, abs=0.5) and snr[3] == pytest.approx(0.0)
    json.dumps(res.to_dict())


def test_bad_inputs_give_clear_messages(tmp_path):
    torch.manual_seed(0)
    backend = ClassifierAudioEmbedding(SoundsClassifier(labels=["a", "b"], embed_dim=8))
    cache = ReferenceCache(tmp_path)
    good = [np.random.default_rng(i).standard_normal(SR) * 0.1 for i in range(3)]
    with pytest.raises(MetricError, match="sample_rate"):
        compare_outputs(good, good, good, backend, cache=cache)
    with pytest.raises(MetricError, match=r"audio\[1\] is silent"):
        compare_outputs(good, good, [good[0], np.zeros(SR)], backend, sample_rate=SR, cache=cache)
    nan = [g.copy() for g in good]
    nan[2][5] = np.nan
    with pytest.raises(MetricError, match=r"quantized\[2\] contains NaN"):
        compare_outputs(good, nan, good, backend, sample_rate=SR, cache=cache)
