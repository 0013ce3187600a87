"""Classifier embedding backends: documented shapes, input conventions, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from backend.metrics import (
    ClassifierAudioEmbedding,
    ClassifierImageEmbedding,
    EmbeddingBackend,
    MetricError,
)
from backend.metrics.embeddings import DEFAULT_DIGITS_CLASSIFIER, DEFAULT_SOUNDS_CLASSIFIER
from backend.models.digits_classifier import DigitsClassifier
from backend.models.sounds_classifier import SoundsClassifier

SR = 16_000


@pytest.fixture(scope="module")
def sounds() -> ClassifierAudioEmbedding:
    torch.manual_seed(0)
    if (DEFAULT_SOUNDS_CLASSIFIER / "config.json").exists():
        return ClassifierAudioEmbedding.from_pretrained()
    return ClassifierAudioEmbedding(SoundsClassifier(labels=["hum", "tick", "noise"]))


@pytest.fixture(scope="module")
def digits() -> ClassifierImageEmbedding:
    torch.manual_seed(0)
    if (DEFAULT_DIGITS_CLASSIFIER / "config.json").exists():
        return ClassifierImageEmbedding.from_pretrained()
    return ClassifierImageEmbedding(DigitsClassifier())


def test_audio_backend_shape_order_and_protocol(sounds):
    assert isinstance(sounds, EmbeddingBackend) and sounds.kind == "audio"
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(SR).astype(np.float32) * 0.1 for _ in range(3)]
    clips.append(np.sin(np.arange(8000) * 0.3) * 0.5)  # a different length
    emb = sounds.embed(clips, SR)
    assert emb.shape == (4, sounds.dim) and emb.dtype == np.float64
    # batching by length must not reorder: embedding one by one gives the same rows
    single = np.concatenate([sounds.embed([c], SR) for c in clips])
    np.testing.assert_allclose(emb, single, atol=1e-5)
    # a (B, T) tensor at 48 kHz is resampled by the classifier's own front end
    t48 = torch.randn(2, 48_000) * 0.1
    assert sounds.embed(t48, 48_000).shape == (2, sounds.dim)
    assert len(sounds.weights_hash) == 64


def test_audio_backend_rejects_bad_input(sounds):
    rng = np.random.default_rng(1)
    good = rng.standard_normal(SR) * 0.1
    with pytest.raises(MetricError, match=r"audio\[1\] is silent"):
        sounds.embed([good, np.zeros(SR)], SR)
    assert sounds.embed([good, np.zeros(SR)], SR, allow_silent=True).shape[0] == 2
    with pytest.raises(MetricError, match="NaN"):
        sounds.embed([np.full(SR, np.inf)], SR)
    with pytest.raises(MetricError, match="sample rate"):
        sounds.embed([good])
    with pytest.raises(MetricError, match="mono"):
        sounds.embed([rng.standard_normal((2, 3, 100))], SR)


def test_image_backend_shape_and_input_conventions(digits):
    assert isinstance(digits, EmbeddingBackend) and digits.kind == "image"
    rng = np.random.default_rng(2)
    signed = rng.uniform(-1, 1, (5, 1, 16, 16)).astype(np.float32)
    emb = digits.embed(torch.from_numpy(signed))
    assert emb.shape == (5, digits.dim)
    # the same pixels as uint8 HWC and as float [0, 1] HWC give the same embeddings
    unit = (signed + 1) / 2
    as_uint8 = np.round(unit * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    as_float_list = [im.transpose(1, 2, 0) for im in unit]
    np.testing.assert_allclose(digits.embed(as_float_list), emb, atol=1e-5)
    np.testing.assert_allclose(digits.embed(as_uint8), emb, atol=0.05 * np.abs(emb).max())
    # a larger RGB image goes through the one fixed resize to 16x16
    assert digits.embed(rng.uniform(-1, 1, (2, 3, 32, 32))).shape == (2, digits.dim)
    assert digits.preprocessing["resize"].startswith("bilinear")


def test_image_backend_rejects_bad_input(digits):
    with pytest.raises(MetricError, match=r"\(B, C, H, W\)"):
        digits.embed(np.zeros((2, 5, 16, 16), dtype=np.float32))
    bad = np.zeros((2, 1, 16, 16), dtype=np.float32)
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(MetricError, match=r"images \[1\] contain NaN"):
        digits.embed(bad)


class TinyEmbedder(nn.Module):
    """Any module with preprocess + embed plugs in: here a 4-d linear embedding of 8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 4)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(images.mean(1, keepdim=True), size=(8, 8))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images.flatten(1))


def test_generic_wrapper_probes_dim_and_hash_tracks_weights():
    torch.manual_seed(0)
    module = TinyEmbedder()
    backend = ClassifierImageEmbedding(module, name="tiny")
    assert backend.dim == 4
    x = np.random.default_rng(3).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    expected = module.proj(torch.from_numpy(x).flatten(1)).detach().double().numpy()
    np.testing.assert_allclose(backend.embed(x), expected, atol=1e-6)
    other = ClassifierImageEmbedding(TinyEmbedder(), name="tiny")
    assert other.weights_hash != backend.weights_hash
    with pytest.raises(MetricError, match="preprocess"):
        ClassifierImageEmbedding(nn.Linear(2, 2))


def test_missing_classifier_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MetricError, match="no sounds classifier"):
        ClassifierAudioEmbedding.from_pretrained(tmp_path)
    with pytest.raises(MetricError, match="no digits classifier"):
        ClassifierImageEmbedding.from_pretrained(tmp_path)


def test_audio_preprocessing_records_the_front_end(sounds):
    params = sounds.preprocessing
    assert params["sample_rate"] == 16_000 and params["resampler"] == "soxr_hq"
    assert params["config"]["embed_dim"] == sounds.dim
