"""A finished run's result (``api.result``) as what the page shows: metrics table, size & speed
text, and the list of FP / quantized media pairs.

Why apart from the tabs: the same view serves a fresh run (Compare), a reopened one (Runs)
and the tests, and formatting numbers for a reader (units, "n/a", which side is better) is
easy to get wrong and worth checking without a browser.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

METRIC_COLUMNS = ["score", "FP vs reference", "quantized vs reference", "quantized vs FP", "what it means"]
PAIRED_HINTS = {
    "snr_db": "signal-to-noise ratio of Q against FP, dB (higher = closer)",
    "psnr_db": "peak SNR of Q against FP, dB (higher = closer)",
    "lsd_db": "log-spectral distance, dB (lower = closer)",
    "mel_l1": "mean |log-mel difference| (lower = closer)",
    "mse": "mean squared error (lower = closer)",
    "mcd_db": "mel cepstral distortion, dB (lower = closer)",
    "ssim": "structural similarity (1 = identical)",
    "clap_cos": "CLAP embedding cosine (1 = same)",
    "embedding_cos": "embedding cosine (1 = same)",
}


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a reader: 4 significant digits, 'n/a' for None / NaN / missing."""
    if value is None or isinstance(value, str):
        return "n/a" if value in (None, "") else value
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}"


def fmt_bytes(n: Any) -> str:
    """1234567 -> '1.23 MB' (decimal units, as download sizes are quoted)."""
    if n is None:
        return "n/a"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def metrics_table(result: dict[str, Any]) -> pd.DataFrame:
    """Distribution scores (Fréchet distance, KID) and the mean paired scores, one row each."""
    m = result.get("metrics") or {}
    fd_name = "FAD (Fréchet audio distance)" if result.get("kind") == "audio" else "FID (Fréchet distance)"
    rows = [
        [fd_name, fmt(m.get("fd_fp_vs_ref")), fmt(m.get("fd_q_vs_ref")), fmt(m.get("fd_q_vs_fp")),
         "lower = closer; biased with few samples (see notes)"],
        ["KID (kernel inception distance)", fmt(m.get("kid_fp_vs_ref")), fmt(m.get("kid_q_vs_ref")),
         fmt(m.get("kid_q_vs_fp")), "lower = closer; unbiased, fine with few samples"],
    ]
    for name, value in sorted((m.get("paired") or {}).items()):
        rows.append([f"paired: {name} (mean)", "", "", fmt(value), PAIRED_HINTS.get(name, "same seed, Q vs FP")])
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def notes_markdown(result: dict[str, Any]) -> str:
    """Sample counts and the metric notes (small-sample bias, silent outputs, ...)."""
    m = result.get("metrics") or {}
    lines = []
    counts = m.get("counts") or {}
    if counts:
        lines.append("Samples: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += [f"- {n}" for n in m.get("notes") or []]
    return "\n".join(lines)


def size_speed_markdown(result: dict[str, Any]) -> str:
    """'Size: 4.2 MB -> 1.1 MB (3.8x smaller) · Speed: ...' as two Markdown lines."""
    size, speed = result.get("size") or {}, result.get("speed") or {}
    parts = []
    if size:
        fp_b, q_b = size.get("fp_bytes"), size.get("q_bytes")
        smaller = fp_b / q_b if fp_b and q_b else None  # from the bytes: "ratio" conventions differ
        parts.append(f"**Denoiser size:** FP {fmt_bytes(fp_b)} → quantized {fmt_bytes(q_b)} "
                     f"(**{fmt(smaller, 3)}× smaller**)")
    if speed:
        cache = " (quantized denoiser reused from cache)" if result.get("denoiser_cache_hit") else ""
        parts.append(f"**Generation time:** FP {fmt(speed.get('fp_seconds'), 3)} s, quantized "
                     f"{fmt(speed.get('q_seconds'), 3)} s (quantized/FP = {fmt(speed.get('ratio'), 3)}); "
                     f"quantizing took {fmt(speed.get('quantize_seconds'), 3)} s{cache}")
    return "  \n".join(parts)


def media_items(result: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """Per (input, seed): a caption, absolute FP / Q file paths, and a one-line paired score."""
    out = []
    for i, item in enumerate(result.get("items") or []):
        paired = item.get("paired") or {}
        score = ", ".join(f"{k} {fmt(v, 3)}" for k, v in sorted(paired.items()))
        out.append({
            "index": i,
            "caption": f"{item.get('input', '')!s} · seed {item.get('seed', '')}",
            "fp": str(Path(run_dir) / item["fp"]) if item.get("fp") else None,
            "q": str(Path(run_dir) / item["q"]) if item.get("q") else None,
            "score": score,
        })
    return out


def headline(result: dict[str, Any]) -> str:
    """The run's one-line summary above the players."""
    n = len(result.get("items") or [])
    return (f"**{result.get('model', '')}** · {result.get('recipe_label', '')} · {n} "
            f"{'clip' if result.get('kind') == 'audio' else 'image'}{'s' if n != 1 else ''} · run "
            f"`{result.get('run_id', '')}`")
