"""The digits data set: scikit-learn's bundled 8x8 digits, upsampled to 16x16, with a fixed split.

The split is fixed by SPLIT_SEED, independent of any training seed, so that the held-out test
images are the same for the classifier, the generator and every evaluation: none of them ever
train on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

IMAGE_SIZE = 16
NUM_CLASSES = 10
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsSplit:
    """Images in [-1, 1] of shape (N, 1, 16, 16) and integer labels, for train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def to_model_images(raw: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Turn sklearn's (N, 8, 8) images with values 0..16 into (N, 1, size, size) in [-1, 1].

    Bilinear upsampling (align_corners=False) — the one fixed resize used everywhere.
    """
    x = torch.as_tensor(np.asarray(raw, dtype=np.float32) / 16.0).unsqueeze(1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 2.0 - 1.0).clamp(-1.0, 1.0).contiguous()


def load_split() -> DigitsSplit:
    """Load the 1797 digits and split them 80/20, stratified by class, with SPLIT_SEED."""
    bunch = load_digits()
    idx = np.arange(len(bunch.target))
    train_idx, test_idx = train_test_split(
        idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target
    )
    images = to_model_images(bunch.images)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return DigitsSplit(images[tr], labels[tr], images[te], labels[te])
