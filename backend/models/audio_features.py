"""THE audio representation of qlisten's embedded sound models: one definition, used everywhere.

The text-to-audio generator (`tiny-sounds`), its judge (`tiny-sounds-classifier`) and the
offline audio metrics must all see the same log-mel image, or a score would measure a mismatch
of front ends instead of the quantization under test. So every constant lives here, once:

- 16 kHz mono, clips of exactly ``CLIP_SAMPLES`` = 16384 samples (1.024 s), because 64 STFT
  hops of 256 samples tile the clip exactly and 64 frames divide by every patch size we use.
- log-mel: ``N_FFT`` 1024 (Hann), hop 256, 64 mel bands 0-8 kHz (HTK-free slaney mel scale,
  unnormalised triangles so that a tone's peak does not depend on its band width).
- The STFT magnitude is divided by the window sum, so a full-scale sine has magnitude 0.5 in
  its bin whatever ``N_FFT`` is; power is then expressed in dB and mapped linearly from
  [``DB_FLOOR``, ``DB_CEIL``] to [-1, 1] with FIXED constants (no per-clip normalisation, so
  loudness survives the round trip and a silent output looks silent).
- Back to audio: the mel bank's pseudo-inverse to linear magnitude, Griffin-Lim with a fixed
  number of iterations and a fixed random state, then a few mel-consistency passes (see
  :func:`logmel_to_waveform`), so the same mel gives the same audio and that audio's log-mel is
  close to the one asked for.

All functions are pure (no state, no randomness beyond the fixed Griffin-Lim seed).
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 1024
HOP_LENGTH = 256
N_MELS = 64
N_FRAMES = 64
CLIP_SAMPLES = N_FRAMES * HOP_LENGTH  # 16384 samples = 1.024 s
FMIN = 0.0
FMAX = SAMPLE_RATE / 2
DB_FLOOR = -80.0
DB_CEIL = 0.0
GRIFFIN_LIM_ITERS = 32
GRIFFIN_LIM_SEED = 0
MEL_CONSISTENCY_ITERS = 8
RESAMPLER = "soxr_hq"

_WINDOW_SUM = float(np.sum(librosa.filters.get_window("hann", N_FFT, fftbins=True)))


@lru_cache(maxsize=1)
def mel_pseudo_inverse() -> np.ndarray:
    """Pseudo-inverse of the mel bank: a fast (~1 ms), deterministic mel -> linear power map."""
    return np.linalg.pinv(mel_basis().astype(np.float64)).astype(np.float32)


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """The (N_MELS, N_FFT//2+1) mel filter bank; unnormalised triangles with peak 1."""
    return librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX, norm=None
    ).astype(np.float32)


def mel_band_of_frequency(freq_hz: float) -> int:
    """Index of the mel band whose triangle peaks closest to ``freq_hz`` (for checks and tests)."""
    centres = librosa.mel_frequencies(n_mels=N_MELS + 2, fmin=FMIN, fmax=FMAX)[1:-1]
    return int(np.argmin(np.abs(centres - freq_hz)))


def fit_clip(waveform: np.ndarray) -> np.ndarray:
    """Crop or zero-pad the last axis to exactly CLIP_SAMPLES, so every clip has 64 frames."""
    waveform = np.asarray(waveform, dtype=np.float32)
    n = waveform.shape[-1]
    if n >= CLIP_SAMPLES:
        return waveform[..., :CLIP_SAMPLES]
    pad = [(0, 0)] * (waveform.ndim - 1) + [(0, CLIP_SAMPLES - n)]
    return np.pad(waveform, pad)


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample along the last axis with ONE fixed resampler (soxr HQ): metrics depend on it."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if orig_sr == target_sr:
        return waveform
    return librosa.resample(
        waveform, orig_sr=orig_sr, target_sr=target_sr, res_type=RESAMPLER, axis=-1
    ).astype(np.float32)


def normalise_db(db: np.ndarray) -> np.ndarray:
    """Map dB in [DB_FLOOR, DB_CEIL] linearly to [-1, 1] (clipped)."""
    scaled = 2.0 * (db - DB_FLOOR) / (DB_CEIL - DB_FLOOR) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def denormalise_db(norm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise_db` (inputs outside [-1, 1] are clipped first)."""
    norm = np.clip(np.asarray(norm, dtype=np.float32), -1.0, 1.0)
    return (norm + 1.0) * 0.5 * (DB_CEIL - DB_FLOOR) + DB_FLOOR


def waveform_to_logmel(waveform: np.ndarray | torch.Tensor) -> np.ndarray:
    """16 kHz waveform(s) (..., samples) -> normalised log-mel (..., N_MELS, N_FRAMES) in [-1, 1].

    The clip is first fitted to CLIP_SAMPLES; the centred STFT yields 65 frames and the last
    (which only sees the zero padding after the clip) is dropped, leaving exactly 64.
    """
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    y = fit_clip(waveform)
    spec = librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, window="hann", center=True)
    db = 10.0 * np.log10(np.maximum(_mel_power(spec), 1e-12))
    return normalise_db(db)


def _mel_power(spec: np.ndarray) -> np.ndarray:
    """Complex STFT (..., N_FFT//2+1, N_FRAMES + 1) -> mel power (..., N_MELS, N_FRAMES)."""
    mag = np.abs(spec)[..., :N_FRAMES] / _WINDOW_SUM
    return np.einsum("mf,...ft->...mt", mel_basis(), mag**2)


@lru_cache(maxsize=1)
def _band_to_bin_weights() -> np.ndarray:
    """(N_FFT//2+1, N_MELS): each linear bin's share of the mel bands it belongs to (rows sum to 1)."""
    basis = mel_basis()
    return (basis / np.maximum(basis.sum(axis=0, keepdims=True), 1e-8)).T.astype(np.float32)


def _mel_consistency(y: np.ndarray, target_power: np.ndarray, iters: int) -> np.ndarray:
    """Pull a waveform's mel power onto ``target_power`` (N_MELS, N_FRAMES).

    Why: Griffin-Lim matches a LINEAR magnitude that the 64-band mel only loosely pins down; its
    inconsistent phases leak energy into bands the mel says are silent (measured on real held-out
    clips: +8 dB in the lowest bands, up to +20 dB around a siren's sweep), which turns a drum into
    a hum and a siren into a chord for the judge and for FAD. Each pass measures the clip's mel,
    takes the per-band power gain target / measured, capped at 4 (+6 dB), spreads it to the linear
    bins of each band and resynthesises from the gained STFT. Attenuating alone removed the leakage
    but left tones 2-3 dB too quiet (the inverse under-shoots in-band); the capped boost restores
    the level (a 0.5-amplitude sine comes back at 0.998-1.003 of its RMS) without inventing
    energy in silent bands, whose target is the floor.
    """
    weights = _band_to_bin_weights()
    for _ in range(iters):
        spec = librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, window="hann", center=True)
        ratio = np.clip(target_power / np.maximum(_mel_power(spec), 1e-12), 0.0, 4.0)
        gain = np.sqrt(weights @ ratio)
        gain = np.concatenate([gain, gain[:, -1:]], axis=1)  # the dropped 65th frame
        y = librosa.istft(spec * gain, hop_length=HOP_LENGTH, n_fft=N_FFT, window="hann", center=True,
                          length=CLIP_SAMPLES)
    return y


def logmel_to_waveform(logmel: np.ndarray | torch.Tensor) -> np.ndarray:
    """Normalised log-mel (..., N_MELS, N_FRAMES) -> waveform(s) (..., CLIP_SAMPLES), float32.

    Mel power -> linear power by the mel bank's pseudo-inverse clipped at zero (NNLS is ~100x
    slower and no better after Griffin-Lim), then Griffin-Lim with GRIFFIN_LIM_ITERS iterations
    from a fixed random phase, then MEL_CONSISTENCY_ITERS passes of :func:`_mel_consistency`:
    deterministic. (More Griffin-Lim iterations or a zero-phase start do not reduce the leakage
    that the consistency passes remove: measured, 32 vs 64 vs 128 iterations.)
    """
    if isinstance(logmel, torch.Tensor):
        logmel = logmel.detach().cpu().float().numpy()
    logmel = np.asarray(logmel, dtype=np.float32)
    batch_shape = logmel.shape[:-2]
    flat = logmel.reshape((-1, N_MELS, N_FRAMES))
    out = np.empty((flat.shape[0], CLIP_SAMPLES), dtype=np.float32)
    inverse = mel_pseudo_inverse()
    for i, item in enumerate(flat):
        mel_power = 10.0 ** (denormalise_db(item) / 10.0)
        # the floor (DB_FLOOR) is "silence": remove it so the inverse does not invent a noise bed
        mel_power = np.maximum(mel_power - 10.0 ** (DB_FLOOR / 10.0), 0.0)
        power = inverse @ mel_power
        mag = np.sqrt(np.maximum(power, 0.0)) * _WINDOW_SUM
        mag = np.concatenate([mag, mag[:, -1:]], axis=1)  # the dropped 65th frame
        y = librosa.griffinlim(
            mag,
            n_iter=GRIFFIN_LIM_ITERS,
            hop_length=HOP_LENGTH,
            n_fft=N_FFT,
            window="hann",
            center=True,
            length=CLIP_SAMPLES,
            random_state=GRIFFIN_LIM_SEED,
        )
        target = np.maximum(10.0 ** (denormalise_db(item) / 10.0), 1e-12)
        out[i] = _mel_consistency(y, target, MEL_CONSISTENCY_ITERS).astype(np.float32)
    return out.reshape(batch_shape + (CLIP_SAMPLES,))
