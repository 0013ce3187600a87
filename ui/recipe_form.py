"""From the Compare form's widget values to a request dict, and the widgets of method settings.

Why a module apart from the tab: turning text boxes into a request (prompts one per line,
seeds "0, 1, 2", bits "16 (FP)" -> None, blank numbers -> None) is plain logic that tests can
check without a browser, and the tab stays wiring. Whether a request is *valid* (bits the
method supports, prompt length, steps range, model offline) is decided by
``backend.api.validate_request``, not here: the form only parses, so there is one rule-keeper.

Which settings a method has comes from ``api.methods()`` (``settings: {name: default}``);
:data:`SETTING_SPECS` only says how to draw each (label, widget kind, choices).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

FP_BITS_LABEL = "16 (not quantized)"
PER_CHANNEL_LABEL = "method default (per channel; Q-DiT 64)"
OFF_LABEL = "off"
METHOD_DEFAULT_LABEL = "method default"
MAX_SEEDS = 64


class FormError(ValueError):
    """A widget value that cannot be read (e.g. seeds 'one, two'); its text is shown as is."""


@dataclass(frozen=True)
class SettingSpec:
    """How to draw one recipe setting. ``kind``: number | int | bool | choice | alpha."""

    label: str
    kind: str
    info: str = ""
    choices: tuple[Any, ...] = field(default_factory=tuple)  # for "choice": values (None allowed)


SETTING_SPECS: dict[str, SettingSpec] = {
    "residual_bits": SettingSpec("RT residual bits", "choice", "second-stage code for large weights (RT)",
                                 (None, 2, 3, 4)),
    "residual_threshold": SettingSpec("RT residual threshold", "number",
                                      "weights above this magnitude get the residual stage"),
    "lzs_group": SettingSpec("ZS (leading-zero suppression) group", "choice",
                             "activation codes per shared exponent", (4, 8, 16, 32, 64)),
    "lzs_rounding": SettingSpec("ZS rounding", "choice", "", ("nearest", "truncate")),
    "group_size": SettingSpec("Group size", "choice", "weights (and Q-DiT activations) per scale",
                              (None, 16, 32, 64, 128)),
    "search": SettingSpec("Group-size search (Q-DiT evolutionary)", "bool", "slower: searches per-layer groups"),
    "search_population": SettingSpec("Search population", "int"),
    "search_generations": SettingSpec("Search generations", "int"),
    "search_min_mean_group": SettingSpec("Search: smallest mean group size", "number",
                                         "keeps the searched groups from shrinking the size gain"),
    "smooth_alpha": SettingSpec("Smoothing alpha", "alpha", "0..1 (migration strength) or 'search'"),
    "lowrank_rank": SettingSpec("Low-rank branch rank", "int", "0 = no low-rank branch"),
    "avg_bits": SettingSpec("Mixed precision: average weight bits", "number",
                            "budget between W bits and 32; blank = uniform bits"),
    "a_mode": SettingSpec("Activation quantization", "choice", "static (calibrated) or dynamic (per call)",
                          (None, "static", "dynamic")),
    "timestep_buckets": SettingSpec("Timestep buckets", "int", "separate activation ranges per group of steps; "
                                    "blank = one range"),
    "scale_method": SettingSpec("Scale choice", "choice", "", ("minmax", "percentile", "mse")),
}


def choice_label(name: str, value: Any) -> str:
    """The text a dropdown shows for a setting value (None has a per-setting word)."""
    if value is None:
        return {"group_size": PER_CHANNEL_LABEL, "a_mode": METHOD_DEFAULT_LABEL}.get(name, OFF_LABEL)
    return str(value)


def bits_label(bits: int | None) -> str:
    return FP_BITS_LABEL if bits is None else str(bits)


def parse_bits(value: Any) -> int | None:
    """'8' -> 8; '16 (not quantized)' / None / '' -> None (that operand stays floating point)."""
    if value is None or value == "" or value == FP_BITS_LABEL:
        return None
    try:
        bits = int(str(value).split()[0])
    except ValueError as exc:
        raise FormError(f"bits must be a whole number, got {value!r}") from exc
    return None if bits >= 16 else bits


def parse_lines(text: str | None) -> list[str]:
    """One prompt (or class name) per line; blank lines dropped, surrounding spaces trimmed."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def parse_seeds(text: str | None) -> list[int]:
    """'0, 1 2' -> [0, 1, 2]; ranges like '0-3' are allowed. Raises FormError on anything else."""
    seeds: list[int] = []
    for tok in re.split(r"[,\s;]+", (text or "").strip()):
        if not tok:
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", tok)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo or hi - lo >= MAX_SEEDS:
                raise FormError(f"seed range {tok!r} must go up and hold at most {MAX_SEEDS} seeds")
            seeds.extend(range(lo, hi + 1))
        elif tok.isdigit():
            seeds.append(int(tok))
        else:
            raise FormError(f"seeds must be whole numbers >= 0 separated by commas, got {tok!r}")
    if not seeds:
        raise FormError("give at least one seed (e.g. 0)")
    return list(dict.fromkeys(seeds))


def parse_setting(name: str, value: Any, default: Any) -> Any:
    """A widget value -> the recipe value for setting ``name`` (JSON-safe)."""
    spec = SETTING_SPECS.get(name)
    if spec is None:  # a setting this form does not know: shown as text, read back as typed
        return _typed_like(value, default)
    if spec.kind == "choice":
        for choice in spec.choices:
            if value == choice or value == choice_label(name, choice):
                return choice
        raise FormError(f"{spec.label}: {value!r} is not one of the choices")
    if spec.kind == "bool":
        return bool(value)
    if spec.kind in ("number", "int"):
        if value is None or value == "":
            return None if default is None else default
        try:
            num = float(value)
        except (TypeError, ValueError) as exc:
            raise FormError(f"{spec.label}: {value!r} is not a number") from exc
        if spec.kind == "int":
            if num != int(num):
                raise FormError(f"{spec.label}: {value!r} must be a whole number")
            return int(num)
        return num
    if spec.kind == "alpha":
        text = str(value).strip()
        if text == "search":
            return "search"
        try:
            return float(text)
        except ValueError as exc:
            raise FormError(f"{spec.label}: give a number between 0 and 1, or 'search' (got {text!r})") from exc
    raise AssertionError(spec.kind)


def _typed_like(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int | float) and isinstance(value, str):
        try:
            return type(default)(value)
        except ValueError as exc:
            raise FormError(f"{value!r} is not a number") from exc
    return value


def widget_value(name: str, default: Any) -> Any:
    """The initial widget value for a setting default."""
    spec = SETTING_SPECS.get(name)
    if spec and spec.kind == "choice":
        return choice_label(name, default)
    if spec and spec.kind == "alpha":
        return str(default)
    return default


def build_request(
    *, model: str, w_bits: Any, a_bits: Any, method: str, settings: dict[str, Any],
    method_settings: dict[str, Any], inputs_text: str, seeds_text: str, steps: Any,
    guidance: Any = None, telemetry: bool = True,
) -> dict[str, Any]:
    """The request dict of ``backend.api`` from the form (only ``method``'s own settings go in).

    ``settings`` holds every setting widget's value by name, ``method_settings`` the chosen
    method's ``{name: default}`` from ``api.methods()``.
    """
    recipe: dict[str, Any] = {"w_bits": parse_bits(w_bits), "a_bits": parse_bits(a_bits), "method": method}
    for name, default in method_settings.items():
        recipe[name] = parse_setting(name, settings.get(name, default), default)
    if steps is None or steps == "":
        raise FormError("give the number of denoising steps")
    try:
        steps_f = float(steps)
    except (TypeError, ValueError) as exc:
        raise FormError(f"steps must be a whole number, got {steps!r}") from exc
    if steps_f != int(steps_f):
        raise FormError(f"steps must be a whole number, got {steps!r}")
    guide = None
    if guidance is not None and str(guidance).strip():
        try:
            guide = float(str(guidance).strip())
        except ValueError as exc:
            raise FormError(f"guidance must be a number (or blank for the model's default), got {guidance!r}") from exc
    return {"model": model, "inputs": parse_lines(inputs_text), "seeds": parse_seeds(seeds_text),
            "steps": int(steps_f), "guidance": guide, "recipe": recipe, "telemetry": bool(telemetry)}
