"""Embedding backends: the pluggable models that turn outputs into vectors for FD and KID.

Every backend follows `EmbeddingBackend`: a `name`, a `kind` ('audio' | 'image'), a `dim`,
`embed(items, sample_rate=None, allow_silent=False) -> (N, dim)` float64 (silent
audio raises unless `allow_silent`; image backends ignore it), plus `weights_hash` and
`preprocessing` (a JSON-able dict) so reference statistics can be cached by content.

The offline defaults are the embedded classifiers' penultimate layers (FAD on
`tiny-sounds-classifier`, FID on `tiny-digits-classifier`): trained on the real data of the
embedded generators, so their features know what these sounds and digits look like.
`ClassifierAudioEmbedding` / `ClassifierImageEmbedding` wrap ANY module with the same
`preprocess` + `embed` methods, so tests and future models plug in the same way.

Not provided, and why:
- Inception-v3: pytorch-fid 0.3.0, torch-fidelity 0.4.0, clean-fid and torchmetrics load
  it through torchvision (pip's resolver adds torchvision 0.28 to torch-fidelity), and no
  torchvision build imports with torch 2.13.0 CPU here (`operator torchvision::nms does
  not exist`); on 16x16 digits Inception features would also say little.
- VGGish: `torch-vggish-yamnet` 0.2.1 pulls torchaudio 2.11 (pins another torch);
  `torchvggish` 0.2 (2022, unmaintained) installs with only `resampy` but fetches its
  weights from GitHub at first use, which this offline machine cannot; a candidate for an
  optional backend where the weights can be placed locally.
- CLAP is available via transformers in `backend.metrics.clap` (not `laion-clap`, which
  imports torchvision at import time).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from backend.metrics.errors import MetricError
from backend.metrics.validate import check_audio, images_to_unit

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOUNDS_CLASSIFIER = REPO_ROOT / "assets" / "models" / "tiny-sounds-classifier"
DEFAULT_DIGITS_CLASSIFIER = REPO_ROOT / "assets" / "models" / "tiny-digits-classifier"


@runtime_checkable
class EmbeddingBackend(Protocol):
    """What FD/KID and the reference cache need from an embedding model."""

    name: str
    kind: str  # 'audio' | 'image'
    dim: int

    @property
    def weights_hash(self) -> str: ...

    @property
    def preprocessing(self) -> dict[str, Any]: ...

    def embed(
        self, items: Any, sample_rate: int | None = None, allow_silent: bool = False
    ) -> np.ndarray: ...


def state_dict_hash(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes), in name order."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous().reshape(-1)  # 0-d buffers cannot be viewed
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _infer_dim(module: nn.Module) -> int | None:
    dim = getattr(module, "embed_dim", None)
    if dim is None and isinstance(getattr(module, "config", None), dict):
        dim = module.config.get("embed_dim")
    return int(dim) if dim is not None else None


class _ModuleBackend:
    """Shared plumbing: eval mode, no-grad batching, lazy weights hash."""

    kind = ""

    def __init__(self, module: nn.Module, name: str, batch_size: int = 64) -> None:
        if not (hasattr(module, "embed") and hasattr(module, "preprocess")):
            raise MetricError(f"{name}: the module needs `preprocess` and `embed` methods")
        self.module = module.eval()
        self.name = name
        self.batch_size = batch_size
        self._weights_hash: str | None = None
        self._dim = _infer_dim(module)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._probe_dim())
        return self._dim

    def _probe_dim(self) -> int:
        raise NotImplementedError

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = state_dict_hash(self.module)
        return self._weights_hash

    def _run(self, batch: torch.Tensor | np.ndarray, *pre_args: Any) -> np.ndarray:
        with torch.inference_mode():
            feats = self.module.embed(self.module.preprocess(batch, *pre_args))
        return feats.detach().cpu().double().numpy()


class ClassifierAudioEmbedding(_ModuleBackend):
    """Penultimate features of a sounds classifier: FAD's offline embedding.

    `embed(waveforms, sample_rate)` takes a (B, T) array/tensor or a list of clips of any
    length at any rate. Clips are validated (NaN/inf/silence, see `check_audio`), then passed
    to the module's own `preprocess(waveforms, sample_rate)` - for `SoundsClassifier` that is
    the project's one front end: soxr-HQ resampling to 16 kHz, crop/pad to 1.024 s, log-mel.
    Clips of equal length are batched together.
    """

    kind = "audio"

    def __init__(
        self, module: nn.Module, name: str = "classifier-audio", batch_size: int = 64
    ) -> None:
        super().__init__(module, name, batch_size)

    @classmethod
    def from_pretrained(
        cls, path: str | Path = DEFAULT_SOUNDS_CLASSIFIER, **kwargs: Any
    ) -> ClassifierAudioEmbedding:
        """Load `SoundsClassifier` from a local folder (default: the embedded one)."""
        from backend.models.sounds_classifier import SoundsClassifier

        if not (Path(path) / "config.json").exists():
            raise MetricError(f"no sounds classifier at {path} (expected config.json there)")
        kwargs.setdefault("name", f"sounds-classifier:{Path(path).name}")
        return cls(SoundsClassifier.from_pretrained(path), **kwargs)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Front-end identity for the cache key: a changed log-mel must not reuse stats."""
        params: dict[str, Any] = {
            "frontend": type(self.module).__name__ + ".preprocess",
            "input": "mono float32",
            "config": getattr(self.module, "config", None),
        }
        if type(self.module).__name__ == "SoundsClassifier":
            from backend.models import audio_features as af

            params.update(
                sample_rate=af.SAMPLE_RATE, resampler=af.RESAMPLER, n_fft=af.N_FFT,
                hop=af.HOP_LENGTH, n_mels=af.N_MELS, clip_samples=af.CLIP_SAMPLES,
                db_range=[af.DB_FLOOR, af.DB_CEIL],
            )
        return params

    def _probe_dim(self) -> int:
        probe = np.sin(np.linspace(0, 2000, 16000, dtype=np.float32))[None]
        return self._run(probe, 16000).shape[1]

    def embed(
        self, items: Any, sample_rate: int | None = None, allow_silent: bool = False
    ) -> np.ndarray:
        """Waveforms -> (N, dim) float64 embeddings, in input order."""
        if sample_rate is None:
            raise MetricError(f"{self.name}: audio embeddings need the sample rate")
        batch = check_audio(items, sample_rate, "audio", allow_silent=allow_silent)
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, clip in enumerate(batch.waveforms):
            by_length[len(clip)].append(i)
        out = np.empty((len(batch.waveforms), self.dim))
        for idx in by_length.values():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                wav = np.stack([batch.waveforms[i] for i in chunk])
                out[chunk] = self._run(wav, batch.sample_rate)
        return out


class ClassifierImageEmbedding(_ModuleBackend):
    """Penultimate features of a digits classifier: FID's offline embedding.

    `embed(images)` accepts the conventions of `validate.images_to_unit` (a (B, C, H, W) float
    batch in [-1, 1], uint8 arrays, or a list of HWC floats in [0, 1]); images are brought to
    [-1, 1] (B, C, H, W) and handed to the module's `preprocess`, which for `DigitsClassifier`
    is THE fixed resize: grey by channel mean, bilinear, antialias=True, align_corners=False,
    to 16x16. (Its `embed` preprocesses again; that is a no-op on preprocessed input.)
    """

    kind = "image"

    def __init__(
        self, module: nn.Module, name: str = "classifier-image", batch_size: int = 256
    ) -> None:
        super().__init__(module, name, batch_size)

    @classmethod
    def from_pretrained(
        cls, path: str | Path = DEFAULT_DIGITS_CLASSIFIER, **kwargs: Any
    ) -> ClassifierImageEmbedding:
        """Load `DigitsClassifier` from a local folder (default: the embedded one)."""
        from backend.models.digits_classifier import DigitsClassifier

        if not (Path(path) / "config.json").exists():
            raise MetricError(f"no digits classifier at {path} (expected config.json there)")
        kwargs.setdefault("name", f"digits-classifier:{Path(path).name}")
        return cls(DigitsClassifier.from_pretrained(path), **kwargs)

    @property
    def preprocessing(self) -> dict[str, Any]:
        cfg = getattr(self.module, "config", {})
        size = cfg.get("image_size") if isinstance(cfg, dict) else None
        return {
            "frontend": type(self.module).__name__ + ".preprocess",
            "range": "[-1, 1]",
            "resize": "bilinear, antialias=True, align_corners=False",
            "size": size,
        }

    def _probe_dim(self) -> int:
        return self._run(torch.zeros(1, 1, 16, 16)).shape[1]

    def embed(
        self, items: Any, sample_rate: int | None = None, allow_silent: bool = False
    ) -> np.ndarray:
        """Images -> (N, dim) float64 embeddings, in input order (`allow_silent` unused)."""
        unit = images_to_unit(items, "images")
        signed = torch.from_numpy(unit * 2.0 - 1.0).float()
        parts = [
            self._run(signed[s : s + self.batch_size])
            for s in range(0, len(signed), self.batch_size)
        ]
        return np.concatenate(parts)


def hash_items(items: Sequence | np.ndarray | torch.Tensor, extra: dict[str, Any]) -> str:
    """sha256 of a data set's bytes (dtype, shape, bytes of each item) and a params dict."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    if isinstance(items, (np.ndarray, torch.Tensor)):
        items = [items]
    for item in items:
        arr = np.ascontiguousarray(item.detach().cpu().numpy() if torch.is_tensor(item) else item)
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()
