"""The one door: the UI, scripts and gradio_client submit comparisons here.

    api = QlistenAPI()                  # root: $QLISTEN_HOME, else <repo>/.qlisten
    api.start()
    job = api.submit({"model": "tiny-sounds", "inputs": ["a low humming tone"], "seeds": [0],
                      "steps": 10, "recipe": {"w_bits": 4, "a_bits": 8, "method": "qdit"}})
    api.wait(job); api.result(job)      # players' files, FAD/FID, paired scores, size, speed

Why a validating door in front of the queue: every caller gets the same checks and the same
one-line messages (the page shows them as they are), and the request that reaches the
content-hash cache is normalised (defaults filled in), so "steps omitted" and "steps = the
default" are the same run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from backend.jobs import NON_DETERMINING_KEYS, JobQueue
from backend.models.errors import UnknownModelError
from backend.models.registry import REPO_ROOT, get_entry, list_models, unavailable_reason
from backend.quant import ACT_BITS, WEIGHT_BITS, QuantError
from backend.quant.recipes import METHOD_TITLES, METHODS, Recipe, base_config
from backend.runner import run_comparison

HOME_ENV = "QLISTEN_HOME"
MAX_INPUTS = 16
MAX_SEEDS = 8
MAX_ITEMS = 64
MAX_PROMPT_CHARS = 500
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
REQUEST_KEYS = {"model", "inputs", "seeds", "steps", "guidance", "recipe", "telemetry"}

# The settings each method's panel shows (Recipe fields; bits are common to all).
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "ptq": ("group_size", "scale_method", "timestep_buckets"),
    "rtzs": ("lzs_group", "lzs_rounding", "residual_bits", "residual_threshold"),
    "qdit": ("group_size", "search", "search_population", "search_generations", "search_min_mean_group"),
    "smooth": ("a_mode", "smooth_alpha", "lowrank_rank"),
    "mixed": ("group_size", "avg_bits"),
    "ptq4adm": ("avg_bits", "scale_method"),
    "best": ("group_size", "smooth_alpha", "lowrank_rank", "avg_bits"),
}


class RequestError(ValueError):
    """A request the app cannot run; the message is one sentence for the page."""


def default_root() -> Path:
    root = os.environ.get(HOME_ENV)
    return Path(root) if root else REPO_ROOT / ".qlisten"


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise RequestError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise RequestError(f"{what} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(f"{what} must be between {lo} and {hi}, got {value}")
    return value


def _inputs(raw: Any, entry: Any) -> list[str]:
    if isinstance(raw, str):
        raw = raw.splitlines()
    if not isinstance(raw, (list, tuple)):
        raise RequestError("inputs must be a list of prompts (or class names)")
    what = "prompt" if entry.conditioning == "text" else "class"
    out = []
    for i, x in enumerate(raw):
        if isinstance(x, bool) or not isinstance(x, (str, int)):
            raise RequestError(f"{what} {i + 1} must be text, got {type(x).__name__}")
        text = str(x).strip()
        if not text:
            continue
        if len(text) > MAX_PROMPT_CHARS:
            raise RequestError(f"{what} {i + 1} has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
        out.append(text)
    if not out:
        raise RequestError(f"give at least one {what} (one per line)")
    if len(out) > MAX_INPUTS:
        raise RequestError(f"{len(out)} {what}s given; the limit is {MAX_INPUTS} per run")
    if entry.conditioning == "class" and entry.embedded:
        known = set(entry.default_inputs)
        bad = [x for x in out if x not in known]
        if bad:
            raise RequestError(f"unknown class {bad[0]!r} for {entry.name}; choose from {', '.join(sorted(known))}")
    return out


def _seeds(raw: Any) -> list[int]:
    if isinstance(raw, (int, str)) and not isinstance(raw, bool):
        raw = [s for s in str(raw).replace(",", " ").split()]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise RequestError("give at least one seed (whole numbers, e.g. 0, 1, 2)")
    seeds = [_int(s, "a seed", 0, 2**32 - 1) for s in raw]
    if len(seeds) > MAX_SEEDS:
        raise RequestError(f"{len(seeds)} seeds given; the limit is {MAX_SEEDS}")
    if len(set(seeds)) != len(seeds):
        raise RequestError("seeds repeat; give each seed once")
    return seeds


def _recipe(raw: Any) -> Recipe:
    if isinstance(raw, Recipe):
        raw = raw.to_dict()
    if not isinstance(raw, dict):
        raise RequestError("recipe must be a mapping of settings, e.g. {'w_bits': 8, 'a_bits': 8, 'method': 'ptq'}")
    raw = {k: v for k, v in raw.items() if v is not None or k in ("w_bits", "a_bits")}
    try:
        recipe = Recipe.from_dict(raw)
        base_config(recipe)  # bit widths, group sizes and the method's own rules
    except QuantError as exc:
        raise RequestError(str(exc)) from exc
    except TypeError as exc:
        raise RequestError(f"bad recipe setting: {exc}") from exc
    return recipe


def validate_request(request: Any) -> dict[str, Any]:
    """The normalised request (defaults filled in), or ``RequestError`` with one clear line."""
    if not isinstance(request, dict):
        raise RequestError("a request is a mapping with model, inputs, seeds, steps and recipe")
    unknown = set(request) - REQUEST_KEYS - NON_DETERMINING_KEYS
    if unknown:
        raise RequestError(f"unknown request field(s): {', '.join(sorted(unknown))}")
    name = request.get("model")
    if not isinstance(name, str) or not name:
        raise RequestError("pick a model")
    try:
        entry = get_entry(name)
    except UnknownModelError as exc:
        raise RequestError(str(exc).strip("'\"")) from exc
    reason = unavailable_reason(entry)
    if reason:
        raise RequestError(reason)
    inputs = _inputs(request.get("inputs", list(entry.default_inputs)), entry)
    seeds = _seeds(request.get("seeds", [0]))
    if len(inputs) * len(seeds) > MAX_ITEMS:
        raise RequestError(f"{len(inputs)} inputs x {len(seeds)} seeds = {len(inputs) * len(seeds)} samples; "
                           f"the limit is {MAX_ITEMS} per run")
    steps = _int(request.get("steps", entry.default_steps), "steps", 1, MAX_STEPS)
    guidance = request.get("guidance")
    if guidance is None:
        guidance = entry.default_guidance
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or not 0.0 <= guidance <= MAX_GUIDANCE:
        raise RequestError(f"guidance must be a number between 0 and {MAX_GUIDANCE:g}, got {guidance!r}")
    recipe = _recipe(request.get("recipe", {}))
    out = {"model": entry.name, "inputs": inputs, "seeds": seeds, "steps": steps, "guidance": float(guidance),
           "recipe": recipe.to_dict(), "telemetry": bool(request.get("telemetry", True))}
    out.update({k: v for k, v in request.items() if k in NON_DETERMINING_KEYS})
    return out


class QlistenAPI:
    """Submit / status / result / cancel / list over the persistent job queue."""

    def __init__(self, root: str | Path | None = None, *, backend: str | None = None, workers: int = 1) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.queue = JobQueue(self.root, run_comparison, workers=workers, backend=backend)

    def start(self) -> list[str]:
        """Crash recovery, then the worker threads; returns ids marked interrupted."""
        return self.queue.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self.queue.stop(timeout)

    # --- what can be picked ---------------------------------------------------------------
    @staticmethod
    def models() -> list[dict[str, Any]]:
        out = []
        for e in list_models():
            reason = unavailable_reason(e)
            out.append({"name": e.name, "title": e.title, "kind": e.kind, "conditioning": e.conditioning,
                        "default_inputs": list(e.default_inputs), "default_steps": e.default_steps,
                        "default_guidance": e.default_guidance, "embedded": e.embedded,
                        "available": reason is None, "unavailable_reason": reason or "",
                        "licence": e.licence, "description": e.description})
        return out

    @staticmethod
    def methods() -> list[dict[str, Any]]:
        defaults = Recipe().to_dict()
        out = []
        for m in METHODS:
            a_bits = [b for b in ACT_BITS if not (m == "rtzs" and b >= 8)] + [None]
            out.append({"name": m, "title": METHOD_TITLES[m], "w_bits": list(WEIGHT_BITS) + [None],
                        "a_bits": a_bits, "settings": {k: defaults[k] for k in METHOD_SETTINGS[m]}})
        return out

    # --- jobs -----------------------------------------------------------------------------
    def submit(self, request: dict[str, Any]) -> str:
        """Validate and queue; an identical finished request returns its run id at once."""
        return self.queue.submit(validate_request(request))

    def status(self, job_id: str) -> dict[str, Any]:
        try:
            return self.queue.status(job_id)
        except KeyError as exc:
            raise RequestError(f"no run with id {job_id!r}") from exc

    def result(self, job_id: str) -> dict[str, Any] | None:
        self.status(job_id)
        res = self.queue.result(job_id)
        if res is not None:
            res = dict(res, run_dir=str(self.run_dir(job_id)))
        return res

    def cancel(self, job_id: str) -> str:
        self.status(job_id)
        return self.queue.cancel(job_id)

    def list_runs(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        return self.queue.list_runs(limit=limit, status=status)

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        return self.queue.wait(job_id, timeout)

    def run_dir(self, job_id: str) -> Path:
        return self.queue.runs_dir / job_id

    def telemetry(self, job_id: str) -> Any:
        """The run's activation telemetry (``backend.telemetry.Telemetry``), or None."""
        res = self.queue.result(job_id)
        if not res or not res.get("telemetry"):
            return None
        from backend.telemetry import Telemetry

        return Telemetry.load(self.run_dir(job_id) / res["telemetry"])
