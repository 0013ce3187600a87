"""Input checks shared by every metric: turn bad inputs into clear `MetricError`s.

Why: a NaN waveform or an all-zero output would otherwise surface as a scipy traceback or,
worse, as a plausible-looking score (PANN-based FD is known to rate silence as good). Every
check names the set and the item index, so the app can show which output is broken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import librosa
import numpy as np
import torch

from backend.metrics.errors import MetricError

# RMS below this (-80 dBFS) counts as silent: far below any intended output, well above the
# float round-off of a zeroed signal.
SILENCE_RMS = 1e-4
# The ONE resampler of the metrics (same as backend.models.audio_features): FD moves with it.
RESAMPLER = "soxr_hq"
MAX_CHANNELS = 8


@dataclass
class AudioBatch:
    """Validated mono float32 waveforms at one sample rate, with what was done to them."""

    waveforms: list[np.ndarray]
    sample_rate: int
    notes: list[str] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)


def to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy view of a tensor or array (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_item_list(items: Sequence | np.ndarray | torch.Tensor, what: str) -> list[np.ndarray]:
    if isinstance(items, (np.ndarray, torch.Tensor)):
        arr = to_numpy(items)
        if arr.ndim == 1:
            return [arr]
        return [arr[i] for i in range(arr.shape[0])]
    out = [to_numpy(x) for x in items]
    if not out:
        raise MetricError(f"{what} is empty (0 items)")
    return out


def rms(x: np.ndarray) -> float:
    """Root-mean-square of a waveform."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def resample_audio(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with the fixed resampler (soxr HQ via librosa)."""
    if orig_sr == target_sr:
        return x
    return librosa.resample(
        np.asarray(x, dtype=np.float32), orig_sr=orig_sr, target_sr=target_sr,
        res_type=RESAMPLER, axis=-1,
    ).astype(np.float32)


def check_audio(
    items: Sequence | np.ndarray | torch.Tensor,
    sample_rate: int,
    what: str = "audio",
    target_rate: int | None = None,
    allow_silent: bool = False,
    silence_rms: float = SILENCE_RMS,
) -> AudioBatch:
    """Validate waveforms and bring them to mono float32 at `target_rate` (if given).

    Accepts a (B, T) array/tensor, a (T,) single clip, or a list of (T,) / (C, T) clips
    (C <= 8 channels are averaged to mono, and that is noted). NaN/inf and empty clips raise.
    Silent clips (RMS < `silence_rms`) raise unless `allow_silent`, in which case their
    indices are returned in `.silent` so the caller can report them.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise MetricError(f"{what}: sample rate must be a positive integer; got {sample_rate!r}")
    clips = _as_item_list(items, what)
    notes: list[str] = []
    silent: list[int] = []
    out: list[np.ndarray] = []
    downmixed = 0
    for i, clip in enumerate(clips):
        clip = np.asarray(clip)
        if not np.issubdtype(clip.dtype, np.number):
            raise MetricError(f"{what}[{i}]: expected numbers, got dtype {clip.dtype}")
        if clip.ndim == 2 and clip.shape[0] <= MAX_CHANNELS:
            clip = clip.mean(axis=0)
            downmixed += 1
        if clip.ndim != 1:
            raise MetricError(
                f"{what}[{i}]: expected a mono (T,) or (channels, T) waveform; got shape "
                f"{clip.shape}"
            )
        if clip.size == 0:
            raise MetricError(f"{what}[{i}] is empty (0 samples)")
        if not np.all(np.isfinite(clip)):
            raise MetricError(f"{what}[{i}] contains NaN or inf samples")
        clip = clip.astype(np.float32)
        if rms(clip) < silence_rms:
            if not allow_silent:
                raise MetricError(
                    f"{what}[{i}] is silent (RMS {rms(clip):.2e} < {silence_rms:.0e}); "
                    "embeddings of silence give misleading distances"
                )
            silent.append(i)
        out.append(clip)
    if downmixed:
        notes.append(f"{what}: {downmixed} multi-channel clip(s) averaged to mono")
    rate = int(sample_rate)
    if target_rate is not None and target_rate != rate:
        out = [resample_audio(c, rate, target_rate) for c in out]
        notes.append(f"{what}: resampled {rate} Hz -> {target_rate} Hz with {RESAMPLER}")
        rate = int(target_rate)
    return AudioBatch(waveforms=out, sample_rate=rate, notes=notes, silent=silent)


def images_to_unit(
    images: Sequence | np.ndarray | torch.Tensor, what: str = "images"
) -> np.ndarray:
    """Bring images to float64 (B, C, H, W) in [0, 1], by ONE documented convention.

    - uint8 anything: values 0..255, divided by 255.
    - a float/tensor batch (B, C, H, W) with C in {1, 3}: the diffusion output convention,
      values in [-1, 1], mapped by (x + 1) / 2.
    - a list of float arrays (H, W) or (H, W, C) (PIL/matplotlib layout): values in [0, 1].
    NaN/inf raise. Values are not clipped (a quantized model overshooting is a finding).
    """
    if isinstance(images, (np.ndarray, torch.Tensor)):
        arr = to_numpy(images)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float64) / 255.0
            if arr.ndim == 3:
                arr = arr[..., None]
            if arr.ndim == 4 and arr.shape[1] not in (1, 3) and arr.shape[-1] in (1, 3):
                arr = arr.transpose(0, 3, 1, 2)
        else:
            if arr.ndim == 3:
                arr = arr[:, None]
            if arr.ndim != 4 or arr.shape[1] not in (1, 3):
                raise MetricError(
                    f"{what}: a float batch must be (B, C, H, W) with C in (1, 3) and values "
                    f"in [-1, 1]; got shape {arr.shape}"
                )
            arr = (arr.astype(np.float64) + 1.0) / 2.0
    else:
        items = [to_numpy(x) for x in images]
        if not items:
            raise MetricError(f"{what} is empty (0 items)")
        conv = []
        for i, im in enumerate(items):
            scale = 255.0 if im.dtype == np.uint8 else 1.0
            im = im.astype(np.float64) / scale
            if im.ndim == 2:
                im = im[..., None]
            if im.ndim != 3 or im.shape[-1] not in (1, 3):
                raise MetricError(f"{what}[{i}]: expected (H, W) or (H, W, C); got {im.shape}")
            conv.append(im.transpose(2, 0, 1))
        if len({c.shape for c in conv}) != 1:
            shapes = sorted({c.shape for c in conv})
            raise MetricError(f"{what}: images have different shapes {shapes}")
        arr = np.stack(conv)
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise MetricError(f"{what}: expected a non-empty batch of images; got shape {arr.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(arr.reshape(len(arr), -1)), axis=1))
    if bad.size:
        raise MetricError(f"{what}: images {bad[:10].tolist()} contain NaN or inf")
    return arr
