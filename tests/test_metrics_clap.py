"""CLAP through transformers, on a tiny random-weight ClapModel built in code (no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizer

from backend.metrics import ClapEmbedding, EmbeddingBackend, MetricError, clap_score

SR = 16_000
PROJ = 16


@pytest.fixture(scope="module")
def tiny_clap() -> ClapEmbedding:
    torch.manual_seed(0)
    text = dict(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=64)
    # spec_size 128 / 32 mel bins: freq_ratio 4, so the Swin input holds 512 frames (> 101)
    audio = dict(hidden_size=32, patch_embeds_hidden_size=16, depths=[1, 1],
                 num_attention_heads=[2, 2], window_size=4, spec_size=128, num_mel_bins=32,
                 patch_stride=(4, 4), patch_size=4, num_classes=4, enable_fusion=False)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=PROJ))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "\u0120": 5}
    vocab.update({c: 6 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")})
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
    fe = ClapFeatureExtractor(feature_size=32, sampling_rate=48_000, hop_length=480,
                              max_length_s=1, fft_window_size=1024,
                              truncation="rand_trunc", padding="repeatpad")
    return ClapEmbedding(model, fe, tokenizer, name="tiny-clap")


def clips(n: int, seconds: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(int(SR * seconds)) * 0.1).astype(np.float32) for _ in range(n)]


def test_audio_tower_shape_normalised_and_deterministic(tiny_clap):
    assert isinstance(tiny_clap, EmbeddingBackend) and tiny_clap.dim == PROJ
    # 16 kHz in, resampled to 48 kHz; 2.5 s clips are longer than the 1 s window, so they are
    # cut to their first window: deterministic despite 'rand_trunc'
    a = clips(3, 2.5, 0)
    emb = tiny_clap.embed(a, SR)
    assert emb.shape == (3, PROJ)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(tiny_clap.embed(a, SR), emb)
    assert tiny_clap.preprocessing["sample_rate"] == 48_000
    with pytest.raises(MetricError, match="silent"):
        tiny_clap.embed([np.zeros(SR)], SR)


def test_text_tower_and_clap_score_is_the_pairwise_cosine(tiny_clap):
    texts = ["a low hum", "a tick", "white noise"]
    a = clips(3, 1.0, 1)
    t = tiny_clap.embed_text(texts)
    assert t.shape == (3, PROJ)
    score = clap_score(a, texts, tiny_clap, SR)
    audio = tiny_clap.embed(a, SR)
    by_hand = [float(np.dot(audio[i], t[i]) / np.linalg.norm(audio[i]) / np.linalg.norm(t[i]))
               for i in range(3)]
    np.testing.assert_allclose(score.per_sample, by_hand, atol=1e-6)
    assert score.mean == pytest.approx(np.mean(by_hand))
    with pytest.raises(MetricError, match="one text per audio"):
        clap_score(a, texts[:2], tiny_clap, SR)


def test_loads_from_a_local_folder_offline(tiny_clap, tmp_path):
    from transformers import ClapProcessor

    tiny_clap.model.save_pretrained(tmp_path)
    ClapProcessor(feature_extractor=tiny_clap.feature_extractor,
                  tokenizer=tiny_clap.tokenizer).save_pretrained(tmp_path)
    loaded = ClapEmbedding.from_pretrained(tmp_path)
    a = clips(2, 1.0, 2)
    np.testing.assert_allclose(loaded.embed(a, SR), tiny_clap.embed(a, SR), atol=1e-5)
    assert loaded.weights_hash == tiny_clap.weights_hash


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MetricError, match=r"needs a download from the hub \(laion/.*offline"):
        ClapEmbedding.from_pretrained("laion/clap-htsat-unfused", cache_dir=tmp_path)


def test_compare_with_clap_backend_and_clap_score(tiny_clap, tmp_path):
    from backend.metrics import ReferenceCache, compare_outputs

    fp = clips(4, 1.0, 3)
    quantized = [c + np.random.default_rng(4).standard_normal(len(c)).astype(np.float32) * 0.01
                 for c in fp]
    texts = ["a hum", "a tick", "a hiss", "a beep"]
    res = compare_outputs(fp, quantized, clips(5, 1.0, 5), tiny_clap, sample_rate=SR,
                          texts=texts, clap=tiny_clap, cache=ReferenceCache(tmp_path),
                          n_boot=0, kid_subsets=3)
    assert res.fd["q_vs_fp"] is None  # 4 samples in 16-d: KID only, and said so
    assert res.clap["fp"]["per_sample"] == pytest.approx(
        clap_score(fp, texts, tiny_clap, SR).per_sample)
    assert len(res.clap["quantized"]["per_sample"]) == 4
