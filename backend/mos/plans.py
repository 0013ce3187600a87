"""Protocols and per-rater trial plans.

Why per-rater plans: order effects bias ratings, so every rater gets their own seeded random
order of trials and of conditions inside a trial (recorded, so the exact order any rater heard
can be reproduced). Every stimulus a rater hears gets a fresh opaque id valid for that rater
only, so nothing in a URL, an id or a repeated id across trials tells which condition it is
(the MUSHRA open reference and the hidden reference get different ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .tokens import new_id

ACR = "acr"
MUSHRA = "mushra"
AB = "ab"

ACR_LABELS = {5: "Excellent", 4: "Good", 3: "Fair", 2: "Poor", 1: "Bad"}
MUSHRA_BANDS = [(80, "Excellent"), (60, "Good"), (40, "Fair"), (20, "Poor"), (0, "Bad")]


@dataclass(frozen=True)
class Protocol:
    """Scale of one protocol and the validation rule of its answers."""

    name: str
    lo: float
    hi: float
    integer: bool
    title: str
    attention_tolerance: float

    def valid(self, value: float) -> bool:
        """A number on the scale; bools, strings, NaN and +-inf (JSON "Infinity") are not."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if not math.isfinite(value) or (self.integer and float(value) != int(value)):
            return False
        return self.lo <= value <= self.hi


PROTOCOLS = {
    ACR: Protocol(ACR, 1, 5, True, "Absolute category rating (ITU-T P.800)", 0),
    MUSHRA: Protocol(MUSHRA, 0, 100, True, "MUSHRA (ITU-R BS.1534)", 10),
    AB: Protocol(AB, 0, 1, True, "A/B preference", 0),
}


def _balanced_picks(rng: np.random.Generator, units: list, n: int) -> list:
    """``n`` picks from ``units`` in shuffled rounds: every unit appears floor/ceil(n/len) times."""
    out: list = []
    while len(out) < n:
        order = rng.permutation(len(units))
        out.extend(units[i] for i in order[: n - len(out)])
    return out


def _attention_positions(rng: np.random.Generator, n_real: int, n_checks: int) -> list[int]:
    """Final trial indices of the checks: random, never first (the rater warms up first)."""
    total = n_real + n_checks
    if n_checks == 0:
        return []
    candidates = np.arange(1, total) if total > 1 else np.arange(total)
    return sorted(int(x) for x in rng.choice(candidates, size=n_checks, replace=False))


def build_plan(
    protocol: str,
    conditions: list[dict],
    items: list[dict],
    trials_per_rater: int,
    n_attention: int,
    seed: int,
) -> tuple[dict, list[dict]]:
    """One rater's plan and the stimulus rows (opaque id -> path) it needs.

    ``conditions``: dicts with cond_id, role; ``items``: dicts with key and files
    (cond_id -> path). ACR: one stimulus per trial, condition x item picks balanced over
    conditions. MUSHRA: one item per trial with every condition (hidden reference included)
    plus the open reference. A/B: one pair of conditions on one item per trial, pairs balanced.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    if trials_per_rater < 1 or n_attention < 0:
        raise ValueError("trials_per_rater must be >= 1 and n_attention >= 0")
    rng = np.random.default_rng(seed)
    stimuli: list[dict] = []

    def stim(item: dict, cond_id: str) -> dict:
        s = {
            "id": new_id("s"),
            "path": item["files"][cond_id],
            "cond_id": cond_id,
            "item_key": item["key"],
        }
        stimuli.append(s)
        return {"id": s["id"]}

    ref = next(c for c in conditions if c["role"] == "reference")
    anchors = [c for c in conditions if c["role"] == "anchor"]
    real: list[dict] = []
    if protocol == ACR:
        # balance over conditions first, then over items within each condition
        per_cond = {c["cond_id"]: _balanced_picks(rng, items, trials_per_rater) for c in conditions}
        cond_order = _balanced_picks(rng, conditions, trials_per_rater)
        used = {c["cond_id"]: 0 for c in conditions}
        units = []
        for c in cond_order:
            units.append((c, per_cond[c["cond_id"]][used[c["cond_id"]]]))
            used[c["cond_id"]] += 1
        for c, it in units:
            real.append(
                {"kind": "rate", "item_key": it["key"], "stimuli": [stim(it, c["cond_id"])]}
            )
    elif protocol == MUSHRA:
        for it in _balanced_picks(rng, items, trials_per_rater):
            order = rng.permutation(len(conditions))
            real.append(
                {
                    "kind": "rate",
                    "item_key": it["key"],
                    "reference": stim(it, ref["cond_id"]),
                    "stimuli": [stim(it, conditions[i]["cond_id"]) for i in order],
                }
            )
    else:
        pairs = [(a, b) for i, a in enumerate(conditions) for b in conditions[i + 1 :]]
        if not pairs:
            raise ValueError("A/B needs at least two conditions")
        for a, b in _balanced_picks(rng, pairs, trials_per_rater):
            it = items[int(rng.integers(len(items)))]
            first, second = (a, b) if rng.random() < 0.5 else (b, a)
            real.append(
                {
                    "kind": "rate",
                    "item_key": it["key"],
                    "stimuli": [stim(it, first["cond_id"]), stim(it, second["cond_id"])],
                }
            )
    order = rng.permutation(len(real))
    real = [real[i] for i in order]

    checks: list[dict] = []
    for _ in range(n_attention):
        it = items[int(rng.integers(len(items)))]
        c = conditions[int(rng.integers(len(conditions)))]
        if protocol == ACR:
            expect = int(rng.integers(1, 6))
            label = ACR_LABELS[expect]
            text = f"Attention check: whatever you hear, select \u201c{label}\u201d ({expect})."
            checks.append(
                {
                    "kind": "attention",
                    "item_key": it["key"],
                    "expect": expect,
                    "instruction": text,
                    "stimuli": [stim(it, c["cond_id"])],
                }
            )
        elif protocol == MUSHRA:
            expect = int(rng.choice([10, 30, 50, 70, 90]))
            checks.append(
                {
                    "kind": "attention",
                    "item_key": it["key"],
                    "expect": expect,
                    "instruction": f"Attention check: set the slider to {expect}.",
                    "stimuli": [stim(it, c["cond_id"])],
                }
            )
        else:
            other = conditions[(conditions.index(c) + 1) % len(conditions)]
            expect = int(rng.integers(2))
            text = f"Attention check: choose {'A' if expect == 0 else 'B'}, whatever you hear."
            checks.append(
                {
                    "kind": "attention",
                    "item_key": it["key"],
                    "expect": expect,
                    "instruction": text,
                    "stimuli": [stim(it, c["cond_id"]), stim(it, other["cond_id"])],
                }
            )
    trials = list(real)
    for pos, check in zip(_attention_positions(rng, len(real), n_attention), checks):
        trials.insert(pos, check)
    for i, t in enumerate(trials):
        t["index"] = i

    train_item = items[int(rng.integers(len(items)))]
    low = anchors[0] if anchors else next((c for c in conditions if c["role"] == "test"), None)
    training = [
        {"caption": "Example of the best quality you will hear", **stim(train_item, ref["cond_id"])}
    ]
    if low is not None:
        caption = (
            "Example of the lowest quality you may hear"
            if anchors
            else "Another example of what you will hear"
        )
        training.append({"caption": caption, **stim(train_item, low["cond_id"])})
    plan = {"protocol": protocol, "seed": int(seed), "trials": trials, "training": training}
    return plan, stimuli
