"""The Python API of listening sessions, called by the HTTP router and the Gradio tab.

Why one service layer: every rule (who may see what, when a rating is accepted, what a
refusal looks like) lives here once, so the rater web page, the admin JSON endpoints and the
Gradio admin view cannot drift apart. Refusals are ``MosError`` with an HTTP status and a
stable machine-readable code.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import secrets
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from . import stats
from .plans import AB, ACR_LABELS, MUSHRA, MUSHRA_BANDS, PROTOCOLS, build_plan
from .sources import ConditionSet
from .store import Store, TrialConflict
from .tokens import (
    admin_ok,
    expiry_from_now,
    hash_token,
    is_expired,
    new_id,
    new_token,
    token_matches,
)

DEFAULT_EXPIRY_HOURS = 14 * 24.0


def json_safe(obj):
    """NaN/inf -> None recursively, so exports and HTTP answers are strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


class MosError(Exception):
    """A refusal with an HTTP status and a stable ``code`` the client can act on."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def as_dict(self) -> dict:
        return {"error": self.code, "detail": self.message}


def _config_hash(recipe: dict) -> str:
    return hashlib.sha1(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:10]


class MosService:
    """Sessions, raters and results over one SQLite store."""

    def __init__(
        self,
        db_path: str | Path,
        admin_token: str,
        base_url: str = "",
        runs_root: str | Path | None = None,
    ):
        if not admin_token:
            raise ValueError("an admin token is required")
        self.store = Store(db_path)
        self.admin_token = admin_token
        self.base_url = base_url.rstrip("/")
        self.runs_root = Path(runs_root).resolve() if runs_root else None
        # rater k's seed derives from (session seed, k): minting is serialised so that two
        # concurrent admin calls cannot hand the same k (the same trial order) to two raters
        self._mint_lock = threading.Lock()

    # --- admin ---------------------------------------------------------------------------
    def check_admin(self, token: str | None) -> None:
        if not admin_ok(token, self.admin_token):
            raise MosError(403, "invalid_admin_token", "admin token missing or wrong")

    def create_session(
        self,
        admin_token: str | None,
        conditions: ConditionSet,
        prompts: list[str] | None = None,
        protocol: str = MUSHRA,
        trials_per_rater: int = 10,
        n_attention_checks: int = 1,
        n_raters: int = 0,
        title: str = "Listening test",
        expires_hours: float = DEFAULT_EXPIRY_HOURS,
        seed: int | None = None,
    ) -> dict:
        """Store a session and mint ``n_raters`` rater links. ``prompts``: prompt texts or
        item keys to keep (None = all items of ``conditions``)."""
        self.check_admin(admin_token)
        if protocol not in PROTOCOLS:
            raise MosError(422, "bad_protocol", f"protocol must be one of {sorted(PROTOCOLS)}")
        if not (1 <= trials_per_rater <= 500) or not (0 <= n_attention_checks <= 50):
            raise MosError(422, "bad_plan", "trials_per_rater in 1..500, attention checks in 0..50")
        items = [
            it
            for it in conditions.items
            if prompts is None or it.prompt in prompts or it.key in prompts
        ]
        if not items:
            raise MosError(422, "no_items", "no (prompt, seed) item selected")
        if protocol == AB and len(conditions.conditions) < 2:
            raise MosError(422, "bad_plan", "A/B needs at least two conditions")
        session_id = new_id("S")
        seed = int(secrets.randbits(31) if seed is None else seed)
        cond_rows = [
            {"cond_id": c.cond_id, "label": c.label, "role": c.role, "meta": c.meta}
            for c in conditions.conditions
        ]
        item_rows = [
            {
                "key": it.key,
                "prompt": it.prompt,
                "seed": it.seed,
                "files": {c.cond_id: c.files[it.key] for c in conditions.conditions},
            }
            for it in items
        ]
        config = {
            "trials_per_rater": trials_per_rater,
            "n_attention_checks": n_attention_checks,
            "seed": seed,
        }
        self.store.insert_session(
            session_id, protocol, title, expires_hours, config, cond_rows, item_rows
        )
        links = self.add_raters(admin_token, session_id, n_raters) if n_raters else []
        return {"session_id": session_id, "protocol": protocol, "raters": links}

    def add_raters(self, admin_token: str | None, session_id: str, n: int = 1) -> list[dict]:
        """Mint ``n`` raters, each with its own plan, opaque stimuli and token (shown once)."""
        self.check_admin(admin_token)
        sess = self._session(session_id)
        if not 1 <= n <= 1000:
            raise MosError(422, "bad_count", "n must be in 1..1000")
        with self._mint_lock:
            return self._mint(session_id, sess, n)

    def _mint(self, session_id: str, sess: dict, n: int) -> list[dict]:
        cfg = sess["config"]
        conds = [{"cond_id": c["cond_id"], "role": c["role"]} for c in sess["conditions"]]
        items = [{"key": it["item_key"], "files": it["files"]} for it in sess["items"]]
        start = len(self.store.raters(session_id))
        out = []
        for k in range(start, start + n):
            rseed = int(np.random.SeedSequence([cfg["seed"], k]).generate_state(1)[0] & 0x7FFFFFFF)
            plan, stimuli = build_plan(
                sess["protocol"],
                conds,
                items,
                cfg["trials_per_rater"],
                cfg["n_attention_checks"],
                rseed,
            )
            rater_id, token = new_id("R"), new_token()
            self.store.insert_rater(
                rater_id,
                session_id,
                hash_token(token),
                rseed,
                plan,
                stimuli,
                expiry_from_now(sess["expires_hours"]),
            )
            out.append(
                {
                    "rater_id": rater_id,
                    "token": token,
                    "link": f"{self.base_url}/mos/rate/{rater_id}?token={token}",
                }
            )
        return out

    def _session(self, session_id: str) -> dict:
        sess = self.store.session(session_id)
        if sess is None:
            raise MosError(404, "unknown_session", "no such session")
        return sess

    # --- rater ---------------------------------------------------------------------------
    def _rater(self, rater_id: str, token: str | None) -> dict:
        rater = self.store.rater(rater_id)
        if rater is None:
            raise MosError(404, "unknown_rater", "no such rater link")
        if not token_matches(token, rater["token_hash"]):
            raise MosError(403, "invalid_token", "this link's token is not valid for this rater")
        if is_expired(rater["expires_at"]):
            raise MosError(403, "token_expired", "this rater link has expired")
        return rater

    def rater_state(self, rater_id: str, token: str | None) -> dict:
        """What the rater page needs now; never a condition id, label, item or file path."""
        rater = self._rater(rater_id, token)
        sess = self._session(rater["session_id"])
        proto = PROTOCOLS[sess["protocol"]]
        plan = rater["plan"]
        if rater["consent_at"] is None:
            phase = "consent"
        elif rater["training_at"] is None:
            phase = "training"
        elif rater["position"] >= rater["n_trials"]:
            phase = "done"
        else:
            phase = "trial"
        state = {
            "protocol": proto.name,
            "protocol_title": proto.title,
            "title": sess["title"],
            "scale": {
                "lo": proto.lo,
                "hi": proto.hi,
                "labels": ACR_LABELS
                if proto.name != MUSHRA
                else dict((lo, name) for lo, name in MUSHRA_BANDS),
            },
            "phase": phase,
            "position": rater["position"],
            "n_trials": rater["n_trials"],
            "training": [{"id": t["id"], "caption": t["caption"]} for t in plan["training"]],
        }
        if phase == "trial":
            t = plan["trials"][rater["position"]]
            state["trial"] = {
                "index": t["index"],
                "instruction": t.get("instruction", ""),
                "stimuli": [{"id": s["id"]} for s in t["stimuli"]],
                "reference": {"id": t["reference"]["id"]} if "reference" in t else None,
            }
        return state

    def consent(self, rater_id: str, token: str | None) -> dict:
        self._rater(rater_id, token)
        self.store.mark(rater_id, "consent_at")
        return self.rater_state(rater_id, token)

    def training_done(self, rater_id: str, token: str | None) -> dict:
        rater = self._rater(rater_id, token)
        if rater["consent_at"] is None:
            raise MosError(409, "consent_required", "consent first")
        self.store.mark(rater_id, "training_at")
        return self.rater_state(rater_id, token)

    def audio(self, stimulus_id: str, token: str | None) -> bytes:
        """WAV bytes of a stimulus, re-encoded to one format (32-bit float) so that neither the
        file header nor its size tells conditions apart; marks it fetched (server-side check
        that the clip reached the rater before a rating is accepted)."""
        stim = self.store.stimulus(stimulus_id)
        if stim is None:
            raise MosError(404, "unknown_stimulus", "no such audio")
        self._rater(stim["rater_id"], token)
        audio, sr = sf.read(stim["path"], dtype="float32", always_2d=True)
        buf = io.BytesIO()
        sf.write(buf, audio, sr, format="WAV", subtype="FLOAT")
        self.store.mark_fetched(stimulus_id)
        return buf.getvalue()

    def submit(
        self, rater_id: str, token: str | None, trial_index: int, ratings: list[dict]
    ) -> dict:
        """Validate and store one trial's ratings atomically; returns the new state."""
        rater = self._rater(rater_id, token)
        if rater["consent_at"] is None or rater["training_at"] is None:
            raise MosError(409, "consent_required", "consent and training come before trials")
        if not isinstance(trial_index, int) or isinstance(trial_index, bool):
            raise MosError(422, "bad_request", "trial must be an integer")
        if trial_index < rater["position"]:
            raise MosError(409, "already_rated", f"trial {trial_index} was already rated")
        if trial_index > rater["position"] or trial_index >= rater["n_trials"]:
            raise MosError(409, "out_of_order", f"the next trial is {rater['position']}")
        sess = self._session(rater["session_id"])
        proto = PROTOCOLS[sess["protocol"]]
        trial = rater["plan"]["trials"][trial_index]
        expected = [s["id"] for s in trial["stimuli"]]
        if not isinstance(ratings, list) or not all(isinstance(r, dict) for r in ratings):
            raise MosError(422, "bad_request", "ratings must be a list of objects")
        given = [r.get("stimulus") for r in ratings]
        unknown = [g for g in given if g not in expected]
        if unknown:
            raise MosError(422, "unknown_stimulus", "a rated stimulus is not part of this trial")
        if sorted(given) != sorted(expected):
            raise MosError(422, "incomplete", "rate every clip of the trial exactly once")
        rows = []
        for r in ratings:
            value = r.get("value")
            if not proto.valid(value):
                raise MosError(
                    422,
                    "out_of_range",
                    f"rating must be {'an integer ' if proto.integer else ''}"
                    f"in {proto.lo:g}..{proto.hi:g}",
                )
            if r.get("played") is not True:
                raise MosError(422, "not_played", "play every clip to its end before rating")
            stim = self.store.stimulus(r["stimulus"])
            if stim["fetched_at"] is None:
                raise MosError(422, "not_played", "a clip was never loaded from the server")
            rows.append(
                {
                    "stimulus_id": stim["id"],
                    "cond_id": stim["cond_id"],
                    "item_key": stim["item_key"],
                    "value": float(value),
                    "played": True,
                }
            )
        if proto.name == AB and sorted(r["value"] for r in rows) != [0.0, 1.0]:
            raise MosError(422, "out_of_range", "choose exactly one of A and B")
        try:
            position = self.store.submit_trial(rater_id, trial_index, trial["kind"], rows)
        except TrialConflict as exc:
            raise MosError(409, exc.code, str(exc)) from exc
        return {"saved": True, "position": position, "n_trials": rater["n_trials"]}

    # --- results -------------------------------------------------------------------------
    def rows(self, session_id: str) -> list[dict]:
        """Every stored rating with its condition label, prompt and seed (admin only)."""
        sess = self._session(session_id)
        labels = {c["cond_id"]: c["label"] for c in sess["conditions"]}
        items = {it["item_key"]: it for it in sess["items"]}
        out = []
        for r in self.store.ratings(session_id):
            it = items.get(r["item_key"], {})
            out.append(
                r
                | {
                    "label": labels.get(r["cond_id"], ""),
                    "prompt": it.get("prompt"),
                    "seed": it.get("seed"),
                }
            )
        return out

    def _attention(self, session_id: str, rows: list[dict], protocol: str) -> dict[str, dict]:
        tol = PROTOCOLS[protocol].attention_tolerance
        given = {(r["rater_id"], r["trial_index"], r["stimulus_id"]): r["value"] for r in rows}
        out = {}
        for rr in self.store.raters(session_id):
            plan = self.store.rater(rr["id"])["plan"]
            n = failed = 0
            for t in plan["trials"]:
                if t["kind"] != "attention":
                    continue
                vals = [given.get((rr["id"], t["index"], s["id"])) for s in t["stimuli"]]
                if any(v is None for v in vals):
                    continue
                n += 1
                if protocol == AB:
                    ok = vals[t["expect"]] == 1
                else:
                    ok = abs(vals[0] - t["expect"]) <= tol
                failed += not ok
            out[rr["id"]] = {"n_checks": n, "n_failed": failed}
        return out

    def results(self, session_id: str, exclude_failed_attention: bool = True) -> dict:
        """Tables (per condition, per prompt, pairwise tests, raters) and a plotly figure."""
        sess = self._session(session_id)
        protocol = sess["protocol"]
        rows = self.rows(session_id)
        conds = sess["conditions"]
        ref = next(c["cond_id"] for c in conds if c["role"] == "reference")
        attention = self._attention(session_id, rows, protocol)
        screening = stats.mushra_screening(rows, ref) if protocol == MUSHRA else {}
        excluded = {r for r, s in screening.items() if s["excluded"]}
        if exclude_failed_attention:
            excluded |= {r for r, a in attention.items() if a["n_failed"] > 0}
        kept = [r for r in rows if r["trial_kind"] == "rate" and r["rater_id"] not in excluded]
        cond_table = []
        for c in conds:
            vals = [r["value"] for r in kept if r["cond_id"] == c["cond_id"]]
            ci = stats.mean_ci(vals)
            metrics = c["meta"].get("metrics") or {}
            cond_table.append(
                {
                    "cond_id": c["cond_id"],
                    "label": c["label"],
                    "role": c["role"],
                    "n_ratings": ci["n"],
                    "n_raters": len({r["rater_id"] for r in kept if r["cond_id"] == c["cond_id"]}),
                    "mos": ci["mean"],
                    "ci95": ci["half_width"],
                    "ci_low": ci["ci_low"],
                    "ci_high": ci["ci_high"],
                    "config_hash": _config_hash(c["meta"]["recipe"])
                    if "recipe" in c["meta"]
                    else "",
                    **{f"metric:{k}": v for k, v in metrics.items() if isinstance(v, int | float)},
                }
            )
        prompt_table = []
        for it in sess["items"]:
            for c in conds:
                vals = [
                    r["value"]
                    for r in kept
                    if r["cond_id"] == c["cond_id"] and r["item_key"] == it["item_key"]
                ]
                if vals:
                    ci = stats.mean_ci(vals)
                    prompt_table.append(
                        {
                            "prompt": it["prompt"],
                            "seed": it["seed"],
                            "label": c["label"],
                            "n": ci["n"],
                            "mos": ci["mean"],
                            "ci95": ci["half_width"],
                        }
                    )
        labels = {c["cond_id"]: c["label"] for c in conds}
        if protocol == AB:
            pairwise = []
            bt = stats.ab_table(kept, [c["cond_id"] for c in conds])
            for row in bt:
                row["label"] = labels[row["cond_id"]]
        else:
            bt = []
            pairwise = stats.wilcoxon_pairs(kept, [c["cond_id"] for c in conds])
            for row in pairwise:
                row["label_a"], row["label_b"] = labels[row["a"]], labels[row["b"]]
        rater_table = [
            {
                "rater_id": r["id"],
                "position": r["position"],
                "n_trials": r["n_trials"],
                "completed": r["completed_at"] is not None,
                "excluded": r["id"] in excluded,
                **attention.get(r["id"], {}),
                **{
                    f"ref_below_90_{k}": v
                    for k, v in screening.get(r["id"], {}).items()
                    if k in ("fraction_below",)
                },
            }
            for r in self.store.raters(session_id)
        ]
        return {
            "session_id": session_id,
            "protocol": protocol,
            "title": sess["title"],
            "n_ratings": len(rows),
            "excluded_raters": sorted(excluded),
            "conditions": cond_table,
            "prompts": prompt_table,
            "pairwise": pairwise,
            "bradley_terry": bt,
            "raters": rater_table,
            "figure": self.figure(cond_table, bt, protocol),
        }

    @staticmethod
    def figure(cond_table: list[dict], bt: list[dict], protocol: str):
        """Plotly bar chart: MOS per condition with 95 % CI error bars (BT strength for A/B)."""
        import plotly.graph_objects as go

        def clean(v: float) -> float | None:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        if protocol == AB:
            x = [r["label"] for r in bt]
            y = [r["strength"] for r in bt]
            plus = [r["ci_high"] - r["strength"] for r in bt]
            minus = [r["strength"] - r["ci_low"] for r in bt]
            ytitle = "Bradley-Terry strength"
        else:
            x = [r["label"] for r in cond_table]
            y = [clean(r["mos"]) for r in cond_table]
            plus = minus = [clean(r["ci95"]) for r in cond_table]
            ytitle = "MOS (1-5)" if protocol != MUSHRA else "MUSHRA score (0-100)"
        fig = go.Figure(
            go.Bar(
                x=x,
                y=y,
                error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True},
            )
        )
        fig.update_layout(
            yaxis_title=ytitle,
            xaxis_title="condition",
            title="Mean with 95 % confidence interval",
            template="plotly_white",
        )
        if protocol == MUSHRA:
            fig.update_yaxes(range=[0, 100])
        elif protocol != AB:
            fig.update_yaxes(range=[1, 5])
        return fig

    def export_csv(self, session_id: str) -> str:
        """One line per rating, with condition label, prompt, seed and timing (UTC epoch)."""
        rows = self.rows(session_id)
        cols = [
            "session_id",
            "rater_id",
            "trial_index",
            "trial_kind",
            "stimulus_id",
            "cond_id",
            "label",
            "prompt",
            "seed",
            "item_key",
            "value",
            "played",
            "created_at",
        ]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def export_json(self, session_id: str) -> str:
        """Session, conditions, items, raters (with their recorded plans) and every rating."""
        sess = self._session(session_id)
        raters = []
        for r in self.store.raters(session_id):
            full = self.store.rater(r["id"])
            raters.append(r | {"plan": full["plan"]})
        res = self.results(session_id)
        res.pop("figure")
        return json.dumps(
            json_safe(
                {
                    "exported_at": time.time(),
                    "session": sess,
                    "raters": raters,
                    "ratings": self.rows(session_id),
                    "results": res,
                }
            ),
            indent=1,
            default=str,
            allow_nan=False,
        )
