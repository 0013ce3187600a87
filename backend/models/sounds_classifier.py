"""SoundsClassifier: the judge of the embedded `tiny-sounds` generator, and its FAD embedding net.

It is trained on REAL synthetic clips only (training/sounds/corpus.py), so it can say whether a
generated clip sounds like the requested kind, and its penultimate features give the embedding
space for offline FAD on these sounds (VGGish/PANNs cannot be downloaded here, and would not
know a "tick" from a "pluck" at 1 s anyway). Its input is the ONE log-mel of
backend.models.audio_features, so judge, generator and metrics share a front end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from backend.models.audio_features import N_FRAMES, N_MELS, resample, waveform_to_logmel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SoundsClassifier(nn.Module):
    """Four conv stages (64x64 -> 4x4), a dense embedding, a head over the sound kinds.

    Inputs: normalised log-mels (B, 1, 64, 64) or (B, 64, 64) in [-1, 1].
    """

    def __init__(
        self,
        labels: list[str],
        channels: tuple[int, ...] = (16, 32, 64, 64),
        embed_dim: int = 128,
        n_mels: int = N_MELS,
        n_frames: int = N_FRAMES,
    ) -> None:
        super().__init__()
        self.config = {
            "labels": list(labels),
            "channels": list(channels),
            "embed_dim": embed_dim,
            "n_mels": n_mels,
            "n_frames": n_frames,
        }
        stages, c_prev = [], 1
        for c in channels:
            stages.append(_stage(c_prev, c))
            c_prev = c
        self.features = nn.Sequential(*stages)
        shrink = 2 ** len(channels)
        flat = c_prev * (n_mels // shrink) * (n_frames // shrink)
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(flat, embed_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(embed_dim, len(labels))

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @staticmethod
    def preprocess(waveforms: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveforms (B, samples) or (samples,) at any rate -> log-mels (B, 1, 64, 64).

        Resampled to 16 kHz with the one fixed resampler, then cropped/padded to the clip
        length, exactly as the corpus was.
        """
        if isinstance(waveforms, torch.Tensor):
            waveforms = waveforms.detach().cpu().float().numpy()
        wav = np.asarray(waveforms, dtype=np.float32)
        if wav.ndim == 1:
            wav = wav[None]
        wav = resample(wav, sample_rate)
        return torch.from_numpy(waveform_to_logmel(wav)).unsqueeze(1)

    def _as_batch(self, logmels: torch.Tensor) -> torch.Tensor:
        if logmels.ndim == 3:
            logmels = logmels.unsqueeze(1)
        return logmels.float()

    def embed(self, logmels: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, embed_dim): the embedding used for offline FAD."""
        return self.embedding(self.features(self._as_batch(logmels)))

    def forward(self, logmels: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_kinds)."""
        return self.head(self.dropout(self.embed(logmels)))

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json (with the label names) and model.safetensors into `path`."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> SoundsClassifier:
        """Load from a local folder written by `save_pretrained`; returned in eval mode."""
        folder = Path(path)
        config = json.loads((folder / CONFIG_NAME).read_text())
        config["channels"] = tuple(config["channels"])
        model = cls(**config)
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model.eval()
