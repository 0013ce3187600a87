"""DigitsClassifier: the judge of the embedded `tiny-digits` generator, and its FID embedding net.

It is trained on REAL digits only (the training split of training/digits/data.py), so it can
say whether a generated image shows the requested digit, and its penultimate features give
the embedding space for offline FID on digits (Inception would be meaningless at 16x16).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class DigitsClassifier(nn.Module):
    """A small CNN: two conv stages (16 -> 8 -> 4 pixels), a dense embedding, a 10-way head.

    Inputs are images in [-1, 1] of shape (B, 1, 16, 16). `preprocess` brings other inputs there
    with ONE fixed resize (bilinear, align_corners=False, antialias=True) and averages RGB to
    grey, so every caller (judge, FID) sees the same pixels.
    """

    def __init__(
        self,
        image_size: int = 16,
        channels: tuple[int, int] = (32, 64),
        embed_dim: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.config = {
            "image_size": image_size,
            "channels": list(channels),
            "embed_dim": embed_dim,
            "num_classes": num_classes,
        }
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (image_size // 4) ** 2
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(flat, embed_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(embed_dim, num_classes)

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Bring (B, C, H, W) images in [-1, 1] to (B, 1, S, S) with the fixed resize.

        C=3 is averaged to grey; any H, W is resized bilinearly (antialiased, align_corners
        False) to the trained size S (16). Inputs must already be in [-1, 1].
        """
        if images.ndim == 3:
            images = images.unsqueeze(1)
        images = images.float()
        if images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        size = int(self.config["image_size"])
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return images

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, embed_dim): the embedding used for offline FID."""
        return self.embedding(self.features(self.preprocess(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10)."""
        return self.head(self.dropout(self.embed(images)))

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json and model.safetensors into `path`."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> DigitsClassifier:
        """Load from a local folder written by `save_pretrained`; returned in eval mode."""
        folder = Path(path)
        config = json.loads((folder / CONFIG_NAME).read_text())
        config["channels"] = tuple(config["channels"])
        model = cls(**config)
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model.eval()
