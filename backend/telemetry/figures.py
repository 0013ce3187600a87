"""Plotly figures of activation telemetry, for the Inspect tab and the offline demo page.

No figure needs a network at render time: they are plain plotly JSON that Gradio's
``gr.Plot`` draws with its own bundled plotly.js, and :func:`to_html` inlines plotly.js.
Labels are in plain words: a researcher reading them should not need this code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from .capture import Telemetry

METRICS = {
    "absmax": "largest |activation| (FP run)",
    "absmax_q": "largest |activation| (quantized run)",
    "quant_error": "activation quantization error ||x-Q(x)||²/||x||²",
    "clipped_fraction": "fraction of activations clipped",
}
FP_COLOR, Q_COLOR, CLIP_COLOR, GRID_COLOR = "#1f77b4", "#d62728", "#2ca02c", "rgba(80,80,80,0.35)"


def layer_names(tel: Telemetry) -> list[str]:
    """The layers in module order (the choices of the UI's layer dropdown)."""
    return list(tel.layers)


def _pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.3g}%"


def _title(tel: Telemetry, layer: str, j: int) -> str:
    i = tel.layers.index(layer)
    t = tel.timesteps[j]
    clip = tel.qstats["clipped_fraction"][i, j]
    err = tel.qstats["quant_error"][i, j]
    err_s = "n/a" if not math.isfinite(err) else f"{err:.3g}"
    return (f"{layer} — timestep {t}: clipped {_pct(clip)} of activations, "
            f"quantization error {err_s}")


def _frame_traces(tel: Telemetry, layer: str, j: int, log_y: bool) -> list[go.BaseTraceType]:
    """The four traces of one timestep: FP bars, quantized bars, clip range, grid levels."""
    i = tel.layers.index(layer)
    t = tel.timesteps[j]
    edges = tel.edges(layer, t)
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    ys = []
    for run in ("fp", "q"):
        h = tel.hist[run][i, j].astype(float)
        ys.append(h / max(h.sum(), 1.0))
    top = max(float(max(y.max() for y in ys)), 1e-12) * 1.2
    bottom = min((float(y[y > 0].min()) for y in ys if (y > 0).any()), default=1e-6) / 2
    base = bottom if log_y else 0.0
    lo, hi = tel.qstats["clip_lo"][i, j], tel.qstats["clip_hi"][i, j]
    info = tel.layer_info[i]
    clip_x: list[float | None] = []
    clip_y: list[float | None] = []
    if math.isfinite(lo) and math.isfinite(hi):
        clip_x = [lo, lo, None, hi, hi]
        clip_y = [base, top, None, base, top]
    grid_x: list[float | None] = []
    grid_y: list[float | None] = []
    if info.get("grid_exact") and clip_x and 2 <= info["levels"] <= 64:
        for v in np.linspace(lo, hi, info["levels"]):
            grid_x += [float(v), float(v), None]
            grid_y += [base, top, None]
    kind = "mean range per call" if info.get("act") == "dynamic" else "clipping range"
    return [
        go.Bar(x=centers, y=ys[0], width=width, name="FP run", marker_color=FP_COLOR,
               opacity=0.55),
        go.Bar(x=centers, y=ys[1], width=width, name="quantized run", marker_color=Q_COLOR,
               opacity=0.55),
        go.Scatter(x=clip_x, y=clip_y, mode="lines", name=f"quantizer {kind}",
                   line={"color": CLIP_COLOR, "width": 2, "dash": "dash"}),
        go.Scatter(x=grid_x, y=grid_y, mode="lines", name="quantization levels",
                   line={"color": GRID_COLOR, "width": 1}, hoverinfo="skip"),
    ]


def histogram_figure(tel: Telemetry, layer: str, log_y: bool = True) -> go.Figure:
    """One layer's input-activation histograms, FP vs quantized run, with a timestep slider.

    One plotly frame per timestep (slider step = frame); the title of each frame states the
    clipped fraction and the quantization error at that step.
    """
    if layer not in tel.layers:
        raise KeyError(f"{layer}: not in this telemetry (see layer_names)")
    frames = [
        go.Frame(data=_frame_traces(tel, layer, j, log_y), name=str(t),
                 layout={"title": {"text": _title(tel, layer, j)}})
        for j, t in enumerate(tel.timesteps)
    ]
    steps = [
        {"label": str(t), "method": "animate",
         "args": [[str(t)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                             "transition": {"duration": 0}}]}
        for t in tel.timesteps
    ]
    fig = go.Figure(data=frames[0].data, frames=frames)
    info = tel.layer_info[tel.layers.index(layer)]
    note = f" ({info['recipe']})" if info.get("recipe") else ""
    fig.update_layout(
        title={"text": _title(tel, layer, 0), "font": {"size": 14}},
        barmode="overlay", bargap=0,
        xaxis_title="activation value (layer input" + (
            ", clip range in smoothed units" if info.get("smoothed") else "") + ")",
        yaxis_title="fraction of values per bin" + (" (log scale)" if log_y else ""),
        yaxis_type="log" if log_y else "linear",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "denoising timestep: "},
                  "pad": {"t": 40}}],
        margin={"t": 90},
        annotations=[{"text": "quantizer" + note, "xref": "paper", "yref": "paper", "x": 1,
                      "y": -0.12, "showarrow": False, "font": {"size": 10}}] if note else [],
    )
    return fig


def metric_grid(tel: Telemetry, metric: str) -> np.ndarray:
    """``(layers, timesteps)`` values of a heatmap metric (see :data:`METRICS`)."""
    if metric == "absmax":
        return tel.stats["fp"]["absmax"]
    if metric == "absmax_q":
        return tel.stats["q"]["absmax"]
    if metric in ("quant_error", "clipped_fraction"):
        return tel.qstats[metric]
    raise KeyError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")


def heatmap_figure(
    tel: Telemetry, metric: str = "quant_error", log_color: bool | None = None
) -> go.Figure:
    """Layer x timestep heatmap of activation range, quantization error or clipped fraction.

    ``log_color`` (default: on, except for the clipped fraction, often exactly 0) colours
    by log10 of the value: ranges and errors span decades across
    layers, so a linear scale would show one bright layer and a dark rest.
    """
    z = np.asarray(metric_grid(tel, metric), float)
    if log_color is None:  # a clipped fraction is often exactly 0: keep it linear
        log_color = metric != "clipped_fraction"
    shown = np.log10(np.where(z > 0, z, np.nan)) if log_color else z
    label = METRICS[metric]
    hover = "layer %{y}<br>timestep %{x}<br>" + label + ": %{customdata:.4g}<extra></extra>"
    unit = "fraction" if metric == "clipped_fraction" else "value"
    bar = {"title": {"text": f"log10 {unit}" if log_color else unit}}
    fig = go.Figure(go.Heatmap(
        z=shown, x=[str(t) for t in tel.timesteps], y=tel.layers, customdata=z,
        colorscale="Viridis", colorbar=bar, hovertemplate=hover,
    ))
    fig.update_layout(
        title={"text": f"{label}, per layer and denoising timestep", "font": {"size": 14}},
        xaxis_title="denoising timestep (sampling order: left = noisiest)",
        yaxis_title="layer (module order, top = first)", xaxis_type="category",
        yaxis={"autorange": "reversed", "type": "category"},
        height=max(320, 22 * len(tel.layers) + 160),
    )
    return fig


def worst_layers(tel: Telemetry, k: int = 10, metric: str = "quant_error") -> list[dict[str, Any]]:
    """The ``k`` layers with the largest mean ``metric`` over timesteps, as table rows."""
    err, clip = tel.qstats["quant_error"], tel.qstats["clipped_fraction"]
    key = metric_grid(tel, metric)
    rows = []
    for i, layer in enumerate(tel.layers):
        if not np.isfinite(key[i]).any():
            continue
        j = int(np.nanargmax(np.where(np.isfinite(err[i]), err[i], -np.inf))) \
            if np.isfinite(err[i]).any() else 0
        rows.append({
            "layer": layer,
            "activation quantizer": tel.layer_info[i].get("recipe", ""),
            "mean quantization error": float(np.nanmean(err[i])) if np.isfinite(err[i]).any()
            else float("nan"),
            "worst timestep": tel.timesteps[j],
            "worst quantization error": float(err[i, j]),
            "mean clipped fraction": float(np.nanmean(clip[i])) if np.isfinite(clip[i]).any()
            else float("nan"),
            "largest |x| FP": float(np.nanmax(tel.stats["fp"]["absmax"][i])),
            "largest |x| quantized": float(np.nanmax(tel.stats["q"]["absmax"][i])),
            "_key": float(np.nanmean(key[i])),
        })
    rows.sort(key=lambda r: -r["_key"])
    for r in rows:
        del r["_key"]
    return rows[:k]


def to_html(figs: list[go.Figure], title: str = "Activation telemetry") -> str:
    """One self-contained HTML page (plotly.js inlined once; works offline)."""
    parts = []
    for n, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(n == 0), auto_play=False))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body style='font-family:sans-serif'><h2>{title}</h2>{''.join(parts)}</body></html>")
