"""ITU-R BS.1770-4 integrated loudness, and loudness-matched copies of quantized clips.

Why: quantization often changes a clip's level. The players serve the run's wav files at their
true level (a level change is part of what quantization did); a person who wants to judge
timbre alone can tick "loudness-match" and hear the quantized clip gained to the FP clip's
integrated loudness. This is an explicit, labelled playback option: the stored files and every
score are untouched. pyloudnorm is not a dependency; the algorithm is short:

* K-weighting: a high-shelf (+4 dB above ~1.5 kHz) then a high-pass (~38 Hz), designed for
  any sample rate from the analogue prototypes by the bilinear transform (the coefficients the
  standard tabulates for 48 kHz come out of the same design);
* mean square over 400 ms blocks with 75 % overlap; loudness ``-0.691 + 10 log10(z)``;
* gating: blocks below -70 LUFS (absolute), then below (ungated loudness - 10 LU) (relative).

Check by hand: a full-scale 997 Hz sine reads -3.01 LUFS (BS.1770 compliance signal).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

ABS_GATE_LUFS = -70.0
REL_GATE_LU = -10.0
BLOCK_S, OVERLAP = 0.4, 0.75
MAX_GAIN_DB = 30.0  # never raise near-silence into a blast


def _shelf(rate: float) -> tuple[np.ndarray, np.ndarray]:
    """BS.1770 stage 1 (head effects): high shelf, +3.9998 dB, f0 1681.97 Hz, Q 0.7072."""
    g_db, f0, q = 3.999843853973347, 1681.974450955533, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (g_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    b = np.array([vh + vb * k / q + k * k, 2 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return b, a


def _highpass(rate: float) -> tuple[np.ndarray, np.ndarray]:
    """BS.1770 stage 2 (RLB weighting): high-pass, f0 38.14 Hz, Q 0.5003."""
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    b = np.array([1.0, -2.0, 1.0])
    a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return b, a


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """Integrated loudness in LUFS of a mono ``(n,)`` or ``(n, channels)`` signal; -inf if silent."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    for b, a in (_shelf(rate), _highpass(rate)):
        x = lfilter(b, a, x, axis=0)
    block = int(round(BLOCK_S * rate))
    if len(x) < block:  # shorter than one gating block: one block of what there is
        block = len(x)
    if block == 0:
        return float("-inf")
    hop = max(1, int(round(block * (1 - OVERLAP))))
    starts = range(0, len(x) - block + 1, hop)
    z = np.array([np.mean(x[s:s + block] ** 2, axis=0).sum() for s in starts])  # channel weights 1 (L/R/C)
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10 * np.log10(z)
    keep = lk > ABS_GATE_LUFS
    if not keep.any():
        return float("-inf")
    rel = -0.691 + 10 * np.log10(z[keep].mean()) + REL_GATE_LU
    keep &= lk > rel
    return float(-0.691 + 10 * np.log10(z[keep].mean()))


def matched_copy(fp_path: str | Path, q_path: str | Path, out_dir: str | Path | None = None) -> tuple[str, float]:
    """A copy of the quantized clip gained to the FP clip's integrated loudness: (path, gain dB).

    The gain is capped at +/-30 dB and limited so the copy does not clip (peak <= 1); when FP or
    Q is silent the copy is the original at 0 dB. Copies are cached by the files' content.
    """
    fp, rate_fp = sf.read(str(fp_path), dtype="float64", always_2d=False)
    q, rate_q = sf.read(str(q_path), dtype="float64", always_2d=False)
    l_fp, l_q = integrated_loudness(fp, rate_fp), integrated_loudness(q, rate_q)
    gain_db = 0.0 if not (math.isfinite(l_fp) and math.isfinite(l_q)) else float(np.clip(l_fp - l_q, -MAX_GAIN_DB,
                                                                                          MAX_GAIN_DB))
    peak = float(np.max(np.abs(q))) if q.size else 0.0
    if peak > 0:
        gain_db = min(gain_db, -20 * math.log10(peak))  # no clipping in the copy
    digest = hashlib.sha256(Path(fp_path).read_bytes() + Path(q_path).read_bytes()).hexdigest()[:24]
    out = Path(out_dir or Path(tempfile.gettempdir()) / "qlisten_loudness")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{digest}.wav"
    if not path.exists():
        tmp = path.with_suffix(".tmp.wav")
        sf.write(str(tmp), q * 10 ** (gain_db / 20), rate_q, subtype="FLOAT")
        tmp.replace(path)
    return str(path), gain_db
