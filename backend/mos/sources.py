"""Turn stored runs into listening-test conditions.

Why: a run folder holds one recipe's quantized audio next to the FP audio of the same
(prompt, seed) pairs. A listening test needs the FP output exactly once (hidden reference),
each recipe once (test conditions) and a low anchor, all aligned on the same items so that
ratings can be compared pairwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

ROLE_REFERENCE = "reference"
ROLE_TEST = "test"
ROLE_ANCHOR = "anchor"
LOWPASS_HZ = 3500.0


@dataclass(frozen=True)
class Item:
    """One (prompt, seed) pair; ``key`` is stable and used to align conditions."""

    key: str
    prompt: str
    seed: int


@dataclass
class Condition:
    """One thing raters judge: a label the admin sees, and one audio file per item key."""

    cond_id: str
    label: str
    role: str
    files: dict[str, str]
    meta: dict = field(default_factory=dict)


@dataclass
class ConditionSet:
    """Conditions aligned on ``items`` (every condition has a file for every item)."""

    items: list[Item]
    conditions: list[Condition]

    def by_role(self, role: str) -> list[Condition]:
        return [c for c in self.conditions if c.role == role]


def item_key(prompt: str, seed: int) -> str:
    """Stable short key of a (prompt, seed) pair."""
    digest = hashlib.sha1(f"{prompt}\x00{int(seed)}".encode()).hexdigest()[:12]
    return f"i{digest}"


def load_run(run_dir: str | Path) -> dict:
    """Read ``run.json`` and resolve audio paths; refuses runs whose lists disagree in length."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    n = len(meta["prompts"])
    for name in ("seeds", "fp_audio", "q_audio"):
        if len(meta[name]) != n:
            raise ValueError(
                f"{run_dir}: run.json '{name}' has {len(meta[name])} entries, prompts has {n}"
            )
    meta["_dir"] = str(run_dir)
    meta["_items"] = {}
    for prompt, seed, fp, q in zip(
        meta["prompts"], meta["seeds"], meta["fp_audio"], meta["q_audio"]
    ):
        fp_path, q_path = (run_dir / fp).resolve(), (run_dir / q).resolve()
        for path in (fp_path, q_path):
            if not path.is_file():
                raise FileNotFoundError(f"{run_dir}: missing audio {path}")
        meta["_items"][item_key(prompt, seed)] = (
            Item(item_key(prompt, seed), prompt, int(seed)),
            str(fp_path),
            str(q_path),
        )
    return meta


def lowpass_anchor(src: str | Path, dst: str | Path, cutoff_hz: float = LOWPASS_HZ) -> Path:
    """Write the BS.1534 low-pass anchor of ``src`` to ``dst``.

    Zero-phase (forward-backward) Butterworth so the anchor stays time-aligned with the
    reference; the level is kept (no normalisation) so only bandwidth differs.
    """
    audio, sr = sf.read(str(src), dtype="float64", always_2d=True)
    if sr / 2 <= cutoff_hz:
        raise ValueError(
            f"{src}: sample rate {sr} Hz has no content above {cutoff_hz} Hz; "
            "a low-pass anchor would equal the reference"
        )
    sos = signal.butter(8, cutoff_hz, btype="low", fs=sr, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), audio.shape[0] - 1)
    filtered = signal.sosfiltfilt(sos, audio, axis=0, padlen=max(padlen, 0))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), filtered.astype(np.float32), sr, subtype="FLOAT")
    return dst


def conditions_from_runs(
    run_dirs: list[str | Path],
    anchor_run: str | Path | None = None,
    lowpass: bool = False,
    anchor_dir: str | Path | None = None,
    cutoff_hz: float = LOWPASS_HZ,
) -> ConditionSet:
    """Conditions for a session: FP once (hidden reference), each run's quantized output, an anchor.

    ``anchor_run``: a run whose quantized output is the anchor (a deliberately bad recipe);
    it may or may not also be listed in ``run_dirs`` (it is then only used as the anchor).
    ``lowpass``: add the BS.1534 3.5 kHz low-pass of the reference as (another) anchor,
    written under ``anchor_dir`` (default: ``<first run>/../_mos_anchors``).
    Items are the (prompt, seed) pairs present in every run, in the first run's order.
    """
    if not run_dirs:
        raise ValueError("no runs given")
    anchor_path = Path(anchor_run).resolve() if anchor_run is not None else None
    tests = [
        load_run(d) for d in run_dirs if anchor_path is None or Path(d).resolve() != anchor_path
    ]
    anchor_meta = load_run(anchor_path) if anchor_path is not None else None
    all_runs = tests + ([anchor_meta] if anchor_meta else [])
    if not tests:
        raise ValueError("every run given is the anchor; need at least one test run")
    keys = [k for k in tests[0]["_items"] if all(k in r["_items"] for r in all_runs)]
    if not keys:
        raise ValueError("the runs share no (prompt, seed) pair")
    items = [tests[0]["_items"][k][0] for k in keys]
    first = tests[0]
    conds = [
        Condition(
            "fp",
            "FP",
            ROLE_REFERENCE,
            {k: first["_items"][k][1] for k in keys},
            {"model": first.get("model")},
        )
    ]
    seen: set[str] = set()
    for run in tests:
        cid = f"run:{run['run_id']}"
        if cid in seen:
            raise ValueError(f"run {run['run_id']} listed twice")
        seen.add(cid)
        conds.append(
            Condition(
                cid,
                run.get("recipe_label") or run["run_id"],
                ROLE_TEST,
                {k: run["_items"][k][2] for k in keys},
                {
                    "run_id": run["run_id"],
                    "model": run.get("model"),
                    "recipe": run.get("recipe", {}),
                    "metrics": run.get("metrics", {}),
                },
            )
        )
    if anchor_meta is not None:
        conds.append(
            Condition(
                f"anchor:{anchor_meta['run_id']}",
                f"anchor: {anchor_meta.get('recipe_label') or anchor_meta['run_id']}",
                ROLE_ANCHOR,
                {k: anchor_meta["_items"][k][2] for k in keys},
                {
                    "run_id": anchor_meta["run_id"],
                    "recipe": anchor_meta.get("recipe", {}),
                    "metrics": anchor_meta.get("metrics", {}),
                },
            )
        )
    if lowpass:
        out_dir = (
            Path(anchor_dir)
            if anchor_dir
            else Path(first["_dir"]).resolve().parent / "_mos_anchors"
        )
        files = {}
        for k in keys:
            src = first["_items"][k][1]
            tag = hashlib.sha1(f"{Path(src).resolve()}|{cutoff_hz}".encode()).hexdigest()[:16]
            files[k] = str(lowpass_anchor(src, out_dir / f"lp_{tag}.wav", cutoff_hz).resolve())
        conds.append(
            Condition(
                f"anchor:lp{int(cutoff_hz)}",
                f"anchor: LP {cutoff_hz / 1000:g} kHz",
                ROLE_ANCHOR,
                files,
                {"cutoff_hz": cutoff_hz},
            )
        )
    return ConditionSet(items, conds)
