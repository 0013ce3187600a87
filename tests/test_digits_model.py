"""The shipped `tiny-digits` pipeline and its judge load offline and do their jobs (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backend.models.digits_classifier import DigitsClassifier
from training.digits.data import load_split

ROOT = Path(__file__).resolve().parents[1]
GENERATOR_DIR = ROOT / "assets" / "models" / "tiny-digits"
CLASSIFIER_DIR = ROOT / "assets" / "models" / "tiny-digits-classifier"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def split():
    return load_split()


@pytest.fixture(scope="module")
def classifier() -> DigitsClassifier:
    return DigitsClassifier.from_pretrained(CLASSIFIER_DIR)


@pytest.fixture(scope="module")
def pipe():
    from diffusers import DiTPipeline

    pipeline = DiTPipeline.from_pretrained(str(GENERATOR_DIR), local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_split_is_fixed_and_disjoint(split) -> None:
    assert split.train_images.shape == (1437, 1, 16, 16)
    assert split.test_images.shape == (360, 1, 16, 16)
    assert float(split.train_images.min()) == -1.0 and float(split.train_images.max()) == 1.0
    train_rows = {tuple(x.flatten().tolist()) for x in split.train_images}
    test_rows = [tuple(x.flatten().tolist()) for x in split.test_images]
    # sklearn's digits hold a few exact duplicates; almost all test images are unseen
    assert sum(r in train_rows for r in test_rows) <= 5


def test_stock_pipeline_generates_a_batch_in_two_steps(pipe) -> None:
    assert type(pipe.transformer).__name__ == "DiTTransformer2DModel"
    assert pipe.get_label_ids(["3", "7"]) == [3, 7]
    gen = torch.Generator().manual_seed(0)
    out = pipe(class_labels=[3, 7, 1], guidance_scale=2.0, num_inference_steps=2,
               generator=gen, output_type="pt").images
    assert out.shape == (3, 1, 16, 16)
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_generated_digits_are_the_requested_class(pipe, classifier) -> None:
    gen = torch.Generator().manual_seed(1)
    labels = [3] * 3 + [8] * 3
    out = pipe(class_labels=labels, guidance_scale=2.0, num_inference_steps=10,
               generator=gen, output_type="pt").images
    with torch.no_grad():
        pred = classifier(out * 2 - 1).argmax(-1)
    assert (pred == torch.tensor(labels)).float().mean() >= 5 / 6


def test_classifier_shapes(classifier) -> None:
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    assert classifier(x).shape == (5, 10)
    assert classifier.embed(x).shape == (5, classifier.embed_dim)
    # other sizes and RGB go through the one fixed resize in preprocess
    assert classifier.preprocess(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 16, 16)
    assert classifier(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_classifier_accuracy_on_heldout_slice(classifier, split) -> None:
    with torch.no_grad():
        pred = classifier(split.test_images[:120]).argmax(-1)
    assert (pred == split.test_labels[:120]).float().mean() >= 0.9


def test_save_pretrained_round_trip(classifier, tmp_path: Path) -> None:
    classifier.save_pretrained(tmp_path)
    again = DigitsClassifier.from_pretrained(tmp_path)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert torch.equal(again(x), classifier(x))


def test_centring_latents_keeps_the_decoder_output() -> None:
    from training.digits.train import build_vae, centre_latents

    torch.manual_seed(0)
    vae = build_vae().eval()
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        before = vae.encode(images).latent_dist.mean
        decoded_before = vae.decode(before).sample
        centre_latents(vae, images)
        after = vae.encode(images).latent_dist.mean
        decoded_after = vae.decode(after).sample
    # centred latents: per-channel mean 0, std 1 / scaling_factor, same decoded images
    assert after.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert abs(float(after.std()) * vae.config.scaling_factor - 1.0) < 1e-4
    assert torch.allclose(decoded_after, decoded_before, atol=1e-5)
