"""Synthetic run folders in the stored-run layout, for tests and for trying the Listen tab.

Why: the listening test must be exercised end to end (real WAV files, real run.json) before
the app stores real runs. "FP" audio is a chord of sine tones with a little noise; each
"quantized" run adds noise at its own signal-to-noise ratio, so quality really differs and a
rater (or a test) can hear the ranking.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def _fp_clip(prompt_index: int, seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(1000 * prompt_index + seed)
    t = np.arange(int(SR * seconds)) / SR
    base = 220.0 * 2 ** (prompt_index / 12)
    x = sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 2, 3, 5, 8))
    x = x + 0.02 * rng.standard_normal(t.size)
    fade = np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)
    return (0.25 * x / np.abs(x).max() * fade).astype(np.float32)


def make_demo_runs(root: str | Path, snrs_db: dict[str, float] | None = None,
                   prompts: list[str] | None = None, seeds: list[int] | None = None,
                   seconds: float = 1.0) -> list[Path]:
    """Write ``root/<run_id>/run.json`` plus fp/ and q/ WAVs; returns the run folders.

    ``snrs_db``: recipe label -> SNR of the added noise (lower = worse quantization).
    """
    root = Path(root)
    snrs_db = snrs_db or {"W8A8 PTQ": 30.0, "W4A8 Q-DiT": 15.0, "W2A8 naive": 0.0}
    prompts = prompts or ["a dog barking", "rain on a roof", "a church bell"]
    seeds = seeds or [0]
    pairs = [(p, s) for p in prompts for s in seeds]
    out = []
    for r, (label, snr) in enumerate(snrs_db.items()):
        run_id = f"run{r:02d}_" + "".join(ch if ch.isalnum() else "-" for ch in label).lower()
        d = root / run_id
        (d / "fp").mkdir(parents=True, exist_ok=True)
        (d / "q").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(7 + r)
        fp_files, q_files = [], []
        for i, (p, s) in enumerate(pairs):
            fp = _fp_clip(prompts.index(p), s, seconds)
            noise = rng.standard_normal(fp.size).astype(np.float32)
            noise *= np.sqrt(np.mean(fp**2) / np.mean(noise**2) / 10 ** (snr / 10))
            sf.write(str(d / "fp" / f"{i}.wav"), fp, SR, subtype="PCM_16")
            sf.write(str(d / "q" / f"{i}.wav"), np.clip(fp + noise, -1, 1), SR, subtype="PCM_16")
            fp_files.append(f"fp/{i}.wav")
            q_files.append(f"q/{i}.wav")
        meta = {"run_id": run_id, "model": "demo-tones", "recipe": {"snr_db": snr},
                "recipe_label": label, "prompts": [p for p, _ in pairs],
                "seeds": [s for _, s in pairs], "fp_audio": fp_files, "q_audio": q_files,
                "metrics": {"snr_db": snr}}
        (d / "run.json").write_text(json.dumps(meta, indent=1))
        out.append(d)
    return out
