"""CLAP embeddings (audio and text towers) and the CLAP score, through transformers.

Why transformers and not `laion-clap`: `laion_clap` imports torchvision at import time and
pulls numpy 1.x, and torchvision does not import with torch 2.13.0 here; transformers ships
the same LAION checkpoints as `ClapModel` (hub ids `laion/clap-htsat-unfused`,
`laion/larger_clap_general`, `laion/larger_clap_music`).

Offline by default: `ClapEmbedding.from_pretrained` loads from a local folder or from the
Hugging Face cache with `local_files_only=True`; it reaches the hub only with
`allow_online=True`, and otherwise fails with a `MetricError` that says a download is needed.
What a first online use downloads: the model weights (`model.safetensors`, ~600 MB for
clap-htsat-unfused), `config.json`, the feature-extractor config and the RoBERTa BPE
tokenizer files (vocab.json, merges.txt, tokenizer.json).

Fixed choices (FD moves with them, so they are recorded in `preprocessing`):
- input resampled to the feature extractor's rate (48 kHz) with soxr HQ;
- clips longer than the model's window (max_length_s, 10 s) are cut to their first window
  ourselves, so the extractor's random crop ('rand_trunc') / random fusion chunks never
  run and embeddings are deterministic;
- embeddings are L2-normalised, as `laion_clap`'s get_audio_embedding returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.metrics.embeddings import state_dict_hash
from backend.metrics.errors import MetricError
from backend.metrics.validate import RESAMPLER, check_audio

DEFAULT_CLAP = "laion/clap-htsat-unfused"
CLAP_HUB_IDS = ("laion/clap-htsat-unfused", "laion/larger_clap_general", "laion/larger_clap_music")


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput (pooler_output = projected embeds); 4.x a tensor."""
    if torch.is_tensor(out):
        return out
    return out.pooler_output


def _normalise(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).double().cpu().numpy()


class ClapEmbedding:
    """CLAP audio tower as an `EmbeddingBackend` (kind 'audio'), plus the text tower.

    `model` is a transformers `ClapModel`; `feature_extractor` a `ClapFeatureExtractor`;
    `tokenizer` (optional) a RoBERTa tokenizer for `embed_text`.
    """

    kind = "audio"

    def __init__(
        self,
        model: Any,
        feature_extractor: Any,
        tokenizer: Any | None = None,
        name: str = "clap",
        batch_size: int = 8,
    ) -> None:
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.dim = int(model.config.projection_dim)
        self._weights_hash: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_CLAP,
        allow_online: bool = False,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> ClapEmbedding:
        """Load model + processor from a local folder or the HF cache (hub only if allowed)."""
        from transformers import ClapModel, ClapProcessor

        local = Path(name_or_path).is_dir()
        try:
            model = ClapModel.from_pretrained(
                str(name_or_path), local_files_only=local or not allow_online, cache_dir=cache_dir
            )
            processor = ClapProcessor.from_pretrained(
                str(name_or_path), local_files_only=local or not allow_online, cache_dir=cache_dir
            )
        except (OSError, ValueError) as exc:
            if local:
                raise MetricError(f"cannot load CLAP from {name_or_path}: {exc}") from exc
            if not allow_online:
                raise MetricError(
                    f"CLAP needs a download from the hub ({name_or_path}); this machine is "
                    "offline (it is not in the local Hugging Face cache). Download it once "
                    "with allow_online=True, or pass a local folder."
                ) from exc
            raise MetricError(f"cannot download CLAP ({name_or_path}): {exc}") from exc
        kwargs.setdefault("name", f"clap:{Path(str(name_or_path)).name}")
        return cls(model, processor.feature_extractor, processor.tokenizer, **kwargs)

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def max_samples(self) -> int:
        return int(self.feature_extractor.nb_max_samples)

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = state_dict_hash(self.model)
        return self._weights_hash

    @property
    def preprocessing(self) -> dict[str, Any]:
        fe = self.feature_extractor
        return {
            "sample_rate": self.sample_rate,
            "resampler": RESAMPLER,
            "crop": f"first {self.max_samples} samples",
            "truncation": fe.truncation,
            "padding": fe.padding,
            "feature_size": fe.feature_size,
            "normalised": True,
        }

    def embed(
        self, items: Any, sample_rate: int | None = None, allow_silent: bool = False
    ) -> np.ndarray:
        """Waveforms at any rate -> (N, dim) L2-normalised CLAP audio embeddings."""
        if sample_rate is None:
            raise MetricError(f"{self.name}: audio embeddings need the sample rate")
        batch = check_audio(
            items, sample_rate, "audio", target_rate=self.sample_rate, allow_silent=allow_silent
        )
        clips = [c[: self.max_samples] for c in batch.waveforms]
        parts = []
        for s in range(0, len(clips), self.batch_size):
            inputs = self.feature_extractor(
                clips[s : s + self.batch_size], sampling_rate=self.sample_rate,
                return_tensors="pt",
            )
            with torch.inference_mode():
                parts.append(_normalise(_features(self.model.get_audio_features(**inputs))))
        return np.concatenate(parts)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) L2-normalised CLAP text embeddings."""
        if self.tokenizer is None:
            raise MetricError(f"{self.name}: no tokenizer, so no text embeddings")
        if isinstance(texts, str) or not texts:
            raise MetricError("texts must be a non-empty list of strings")
        parts = []
        for s in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(
                list(texts[s : s + self.batch_size]), padding=True, truncation=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                parts.append(_normalise(_features(self.model.get_text_features(**tok))))
        return np.concatenate(parts)


@dataclass(frozen=True)
class ClapScore:
    """Cosine similarity of each audio with its own text, and the mean."""

    mean: float
    per_sample: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def clap_score(
    audios: Any, texts: Sequence[str], backend: ClapEmbedding, sample_rate: int
) -> ClapScore:
    """CLAP score: cos(audio_i, text_i) for each pair (raw cosine in [-1, 1], not x100)."""
    audio = backend.embed(audios, sample_rate)
    if len(texts) != len(audio):
        raise MetricError(f"CLAP score needs one text per audio; got {len(texts)} and {len(audio)}")
    text = backend.embed_text(texts)
    cos = np.sum(audio * text, axis=1)
    return ClapScore(mean=float(cos.mean()), per_sample=[float(v) for v in cos])
