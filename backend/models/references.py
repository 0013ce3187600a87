"""Reference sets ("real data") for FAD/FID of each model, and the embedding net that scores it.

Why here: the runner and the benchmarks must score a model against the same real data with
the same embedding network, so the choice lives next to the registry. The embedded models'
real data is reproducible offline from the training code: scikit-learn's digits (the 20 %
test split the classifier never saw) and the synthetic sound corpus (a seed the generator
never trained on, held-out phrasings). Hub models have no offline real data: the runner then
scores quantized against FP outputs only and says so.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from backend.models.registry import ModelEntry

SOUNDS_REFERENCE_SEED = 4242  # never used by training/sounds (train seed 0)
SOUNDS_REFERENCE_PER_KIND = 16


@dataclass(frozen=True)
class Reference:
    """Real items (audio rows or images) at ``sample_rate`` (audio) and what they are."""

    items: Any
    sample_rate: int | None
    description: str


_LOCK = threading.Lock()
_REFERENCES: dict[str, Reference] = {}
_BACKENDS: dict[str, Any] = {}


def reference_for(entry: ModelEntry) -> Reference | None:
    """The real-data reference set of an embedded model (built once per process), else None."""
    with _LOCK:
        if entry.name in _REFERENCES:
            return _REFERENCES[entry.name]
        ref: Reference | None = None
        if entry.name == "tiny-digits":
            from training.digits.data import load_split

            ref = Reference(load_split().test_images, None, "scikit-learn digits, 20 % test split (360 images)")
        elif entry.name == "tiny-sounds":
            from training.sounds.corpus import build_corpus

            corpus = build_corpus(seed=SOUNDS_REFERENCE_SEED, train_per_kind=0,
                                  held_out_per_kind=SOUNDS_REFERENCE_PER_KIND)
            ref = Reference(corpus.audio, 16_000,
                            f"synthetic sound corpus, seed {SOUNDS_REFERENCE_SEED}, "
                            f"{SOUNDS_REFERENCE_PER_KIND} clips per kind")
        if ref is not None:
            _REFERENCES[entry.name] = ref
        return ref


def embedding_for(kind: str) -> Any:
    """The offline embedding backend for FAD (audio) / FID (image): the embedded classifiers'
    penultimate features (see backend.metrics.embeddings); loaded once per process."""
    with _LOCK:
        if kind not in _BACKENDS:
            from backend.metrics import ClassifierAudioEmbedding, ClassifierImageEmbedding

            cls = ClassifierAudioEmbedding if kind == "audio" else ClassifierImageEmbedding
            _BACKENDS[kind] = cls.from_pretrained()
        return _BACKENDS[kind]
