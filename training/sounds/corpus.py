"""The synthetic sound corpus of `tiny-sounds`: ten sound kinds made with numpy, each with prompts.

Why synthetic: no data set can be downloaded here, and a corpus we synthesise from a seed is
reproducible bit for bit, licence-free, and has ground-truth labels for the judge. Every kind
has random variation (pitch, timing, loudness, timbre) so the generator must learn a
distribution, not a template.

Prompts (training/sounds/phrasings.py): each kind has ~36 training phrasings and 6 HELD-OUT
ones (never seen in training); a fixed split of clips is held out too. The quality bar
generates from held-out phrasings, so it tests the text encoder's generalisation, not memorised strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from backend.models.audio_features import CLIP_SAMPLES, SAMPLE_RATE
from training.sounds.phrasings import HELD_OUT_PHRASINGS, KINDS, PREFIXES, TRAIN_PHRASINGS

SR = SAMPLE_RATE
N = CLIP_SAMPLES

__all__ = ["KINDS", "PREFIXES", "Corpus", "all_prompts", "build_corpus", "held_out_phrasings",
           "synthesise", "train_phrasings"]


def train_phrasings(kind: str) -> tuple[str, ...]:
    """Phrasings the generator is trained on (training/sounds/phrasings.py)."""
    return TRAIN_PHRASINGS[kind]


def held_out_phrasings(kind: str) -> tuple[str, ...]:
    """Phrasings never seen in training: the quality bar prompts with these."""
    return HELD_OUT_PHRASINGS[kind]


def all_prompts(held_out: bool) -> list[str]:
    """Every prompt string (prefix x phrasing) of one split, in a fixed order."""
    pick = held_out_phrasings if held_out else train_phrasings
    return [p + s for k in KINDS for s in pick(k) for p in PREFIXES]


# --------------------------------------------------------------------------- synthesis


def _time() -> np.ndarray:
    return np.arange(N) / SR


def _env_ad(rng: np.random.Generator, attack: float, decay: float) -> np.ndarray:
    """Attack-decay envelope starting at a random onset in the first 0.2 s."""
    t = _time()
    onset = rng.uniform(0.0, 0.2)
    tt = t - onset
    env = np.where(tt < 0, 0.0, np.minimum(tt / attack, 1.0) * np.exp(-np.maximum(tt, 0) / decay))
    return env


def _fade(x: np.ndarray, ms: float = 10.0) -> np.ndarray:
    """Short fade in/out so clip edges do not click."""
    k = int(SR * ms / 1000)
    ramp = np.linspace(0.0, 1.0, k)
    x = x.copy()
    x[:k] *= ramp
    x[-k:] *= ramp[::-1]
    return x


def synth_hum(rng: np.random.Generator) -> np.ndarray:
    t = _time()
    f0 = rng.uniform(50, 120)
    phase = rng.uniform(0, 2 * np.pi, 3)
    h = [1.0, rng.uniform(0.1, 0.5), rng.uniform(0.0, 0.25)]
    x = sum(a * np.sin(2 * np.pi * f0 * (i + 1) * t + phase[i]) for i, a in enumerate(h))
    return _fade(x * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)))


def synth_beep(rng: np.random.Generator) -> np.ndarray:
    t = _time()
    f = rng.uniform(1500, 3200)
    n_beeps = int(rng.integers(1, 4))
    gate = np.zeros(N)
    start = rng.uniform(0.0, 0.15)
    length = rng.uniform(0.12, 0.8 / n_beeps)
    gap = rng.uniform(0.05, 0.12)
    for _ in range(n_beeps):
        gate[(t >= start) & (t < start + length)] = 1.0
        start += length + gap
    gate = np.convolve(gate, np.ones(80) / 80, mode="same")
    return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * gate


def synth_buzz(rng: np.random.Generator) -> np.ndarray:
    t = _time()
    f0 = rng.uniform(90, 320)
    saw = 2.0 * ((f0 * t + rng.uniform()) % 1.0) - 1.0
    return _fade(saw * rng.uniform(0.6, 1.0))


def synth_hiss(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(N)
    tilt = rng.uniform(-0.5, 0.5)  # gentle spectral tilt via one-pole filter
    x = lfilter([1.0], [1.0, -tilt], x)
    return _fade(x / (np.std(x) + 1e-9) * 0.35)


def synth_pluck(rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong: a noise burst circulating in a damped delay line (vectorised by period)."""
    f0 = rng.uniform(150, 700)
    period = int(round(SR / f0))
    decay = rng.uniform(0.985, 0.998)
    onset = int(rng.uniform(0.0, 0.2) * SR)
    y = np.zeros(N + period + 1)
    y[: period + 1] = rng.uniform(-1, 1, period + 1)
    pos = period + 1
    while pos < len(y):
        end = min(pos + period, len(y))
        y[pos:end] = decay * 0.5 * (y[pos - period : end - period] + y[pos - period - 1 : end - period - 1])
        pos = end
    out = np.zeros(N)
    out[onset:] = y[: N - onset]
    return _fade(out)


def synth_drum(rng: np.random.Generator) -> np.ndarray:
    t = _time()
    out = np.zeros(N)
    n_hits = int(rng.integers(1, 3))
    for h in range(n_hits):
        onset = rng.uniform(0.0, 0.15) + h * rng.uniform(0.4, 0.55)
        tt = np.maximum(t - onset, 0)
        f_start, f_end = rng.uniform(120, 200), rng.uniform(40, 70)
        freq = f_end + (f_start - f_end) * np.exp(-tt / 0.03)
        phase = 2 * np.pi * np.cumsum(freq) / SR
        body = np.sin(phase) * np.exp(-tt / rng.uniform(0.08, 0.2))
        click = rng.standard_normal(N) * np.exp(-tt / 0.008) * rng.uniform(0.2, 0.5)
        out += np.where(t >= onset, body + click, 0.0)
    return out


def synth_siren(rng: np.random.Generator) -> np.ndarray:
    t = _time()
    f_lo = rng.uniform(300, 700)
    f_hi = f_lo * rng.uniform(2.0, 3.5)
    freq = f_lo + (f_hi - f_lo) * (t / t[-1]) ** rng.uniform(0.7, 1.4)
    phase = 2 * np.pi * np.cumsum(freq) / SR
    x = np.sin(phase) + rng.uniform(0, 0.3) * np.sin(2 * phase)
    return _fade(x)


def synth_tick(rng: np.random.Generator) -> np.ndarray:
    rate = rng.uniform(4, 9)
    start = rng.uniform(0.0, 1.0 / rate)
    out = np.zeros(N)
    n_click = int(SR * 0.004)
    cutoff = rng.uniform(0.5, 0.9)
    for k, onset in enumerate(np.arange(start, N / SR, 1.0 / rate)):
        i = int(onset * SR)
        burst = rng.standard_normal(n_click) * np.exp(-np.arange(n_click) / (n_click / 4))
        burst = np.diff(burst, prepend=0.0) * cutoff  # high-passed: a click, not a thump
        amp = 1.0 if k % 2 == 0 else rng.uniform(0.6, 1.0)
        seg = out[i : i + n_click]
        seg += amp * burst[: len(seg)]
    return out


def synth_chord(rng: np.random.Generator) -> np.ndarray:
    t = _time()
    root = rng.uniform(180, 420)
    third = 4 if rng.uniform() < 0.5 else 3
    ratios = [1.0, 2 ** (third / 12), 2 ** (7 / 12)]
    x = np.zeros(N)
    for r in ratios:
        f = root * r
        for h, a in ((1, 1.0), (2, 0.4), (3, 0.2)):
            x += a * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi))
    env = np.minimum(t / rng.uniform(0.01, 0.08), 1.0) * np.exp(-t / rng.uniform(1.0, 4.0))
    return _fade(x * env)


def synth_babble(rng: np.random.Generator) -> np.ndarray:
    """Glottal pulse train through moving formant resonators, gated into syllables."""
    t = _time()
    f0 = rng.uniform(95, 230) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = np.cumsum(f0) / SR
    pulses = np.diff(np.floor(phase), prepend=0.0)
    src = lfilter([1.0], [1.0, -0.95], pulses)  # glottal roll-off
    n_syll = int(rng.integers(3, 7))
    seg = N // n_syll
    out = np.zeros(N)
    for s in range(n_syll):
        f1, f2 = rng.uniform(300, 850), rng.uniform(900, 2400)
        piece = src[s * seg : (s + 1) * seg]
        y = piece
        for fc, bw in ((f1, 90.0), (f2, 120.0), (rng.uniform(2500, 3200), 200.0)):
            r = np.exp(-np.pi * bw / SR)
            a = [1.0, -2 * r * np.cos(2 * np.pi * fc / SR), r * r]
            y = y + lfilter([1.0 - r], a, piece) * 4.0
        gate = np.sin(np.linspace(0, np.pi, len(piece))) ** 0.7
        out[s * seg : (s + 1) * seg] = y * gate
    return _fade(out)


SYNTHS = {
    "hum": synth_hum,
    "beep": synth_beep,
    "buzz": synth_buzz,
    "hiss": synth_hiss,
    "pluck": synth_pluck,
    "drum": synth_drum,
    "siren": synth_siren,
    "tick": synth_tick,
    "chord": synth_chord,
    "babble": synth_babble,
}


def synthesise(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One clip of ``kind``: float32, CLIP_SAMPLES long, peak-normalised to a random level."""
    x = SYNTHS[kind](rng)
    x = x / (np.max(np.abs(x)) + 1e-9) * rng.uniform(0.3, 0.9)
    return x.astype(np.float32)


@dataclass(frozen=True)
class Corpus:
    """Clips (n, CLIP_SAMPLES), integer labels (n,), one prompt per clip, split flags."""

    audio: np.ndarray
    labels: np.ndarray
    prompts: list[str]
    held_out: np.ndarray  # bool: True for held-out clips (prompted with held-out phrasings)


def build_corpus(seed: int, train_per_kind: int, held_out_per_kind: int) -> Corpus:
    """Synthesise the corpus from one seed; the split is by construction, not by shuffling."""
    rng = np.random.default_rng(seed)
    audio, labels, prompts, held = [], [], [], []
    for split_held, count in ((False, train_per_kind), (True, held_out_per_kind)):
        for label, kind in enumerate(KINDS):
            phr = held_out_phrasings(kind) if split_held else train_phrasings(kind)
            for _ in range(count):
                audio.append(synthesise(kind, rng))
                labels.append(label)
                prompts.append(PREFIXES[rng.integers(len(PREFIXES))] + phr[rng.integers(len(phr))])
                held.append(split_held)
    return Corpus(
        audio=np.stack(audio),
        labels=np.asarray(labels, dtype=np.int64),
        prompts=prompts,
        held_out=np.asarray(held, dtype=bool),
    )
