"""The Inspect tab: a run's activation telemetry — per-layer histograms (FP vs quantized, with
the quantizer's clip range and levels) over denoising timesteps, a layer x timestep heatmap of
range / quantization error / clipping, and the worst layers.

Why the slider is rewritten here: ``backend.telemetry.histogram_figure`` animates timesteps
with plotly *frames*, but Gradio's ``gr.Plot`` hands plotly only ``data`` and ``layout``
(``Plotly.react(div, data, layout, config)``), so frames are dropped and such a slider does
nothing. :func:`frames_as_update_slider` turns each frame into an ``"update"`` slider step
that carries the traces' x / y / widths and title itself: the slider then works in the page,
in the browser, without a round trip.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from backend.telemetry import METRICS, heatmap_figure, histogram_figure, layer_names, worst_layers

log = logging.getLogger(__name__)
CACHE_RUNS = 4
NO_RUN = "Run a comparison (or open one in the Runs tab) to see its activation histograms here."


def frames_as_update_slider(fig: go.Figure) -> go.Figure:
    """A copy of a frame-animated figure whose slider steps restyle the traces directly."""
    if not fig.frames:
        return fig
    out = go.Figure(data=copy.deepcopy(fig.data), layout=copy.deepcopy(fig.layout))
    idx = list(range(len(fig.data)))
    steps = []
    for frame, old in zip(fig.frames, fig.layout.sliders[0].steps):
        traces = list(frame.data)
        restyle = {
            "x": [list(t.x) if t.x is not None else [] for t in traces],
            "y": [list(t.y) if t.y is not None else [] for t in traces],
        }
        widths = [getattr(t, "width", None) for t in traces]
        if any(isinstance(w, int | float) for w in widths):
            restyle["width"] = widths
        title = frame.layout.title.text if frame.layout and frame.layout.title else None
        steps.append({"label": old.label, "method": "update",
                      "args": [restyle, {"title.text": title} if title else {}, idx]})
    slider = fig.layout.sliders[0].to_plotly_json()
    slider["steps"] = steps
    out.update_layout(sliders=[slider])
    return out


class TelemetryCache:
    """The last few runs' telemetry, so moving the layer picker does not reload files."""

    def __init__(self, api: Any, size: int = CACHE_RUNS) -> None:
        self.api, self.size = api, size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> Any:
        with self._lock:
            if run_id in self._items:
                self._items.move_to_end(run_id)
                return self._items[run_id]
        tel = self.api.telemetry(run_id)
        with self._lock:
            self._items[run_id] = tel
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return tel


def worst_table(tel: Any, k: int = 10) -> pd.DataFrame:
    """The worst layers by mean quantization error, numbers rounded for reading."""
    rows = worst_layers(tel, k=k)
    df = pd.DataFrame(rows)
    for col in df.columns:
        if df[col].dtype.kind == "f":
            df[col] = df[col].map(lambda v: float(f"{v:.4g}"))
    return df


def build_inspect_tab(api: Any, current_run: gr.State) -> dict[str, Any]:
    """Create the tab inside the caller's ``gr.Tab``; it redraws whenever ``current_run`` changes."""
    cache = TelemetryCache(api)
    status = gr.Markdown(NO_RUN, elem_id="inspect-status")
    with gr.Row():
        layer = gr.Dropdown(choices=[], label="Layer (worst first in the table below)", elem_id="inspect-layer",
                            scale=3)
        log_y = gr.Checkbox(value=True, label="log-scale counts", elem_id="inspect-logy", scale=1)
    hist = gr.Plot(label="Input activations, FP vs quantized (drag the timestep slider)", elem_id="inspect-hist")
    metric = gr.Radio(choices=[(label, key) for key, label in METRICS.items()], value="quant_error",
                      label="Heatmap", elem_id="inspect-metric")
    heat = gr.Plot(label="Layer x timestep", elem_id="inspect-heatmap")
    worst = gr.Dataframe(label="Worst layers (mean quantization error over timesteps)", interactive=False,
                         elem_id="inspect-worst", wrap=True)

    def histogram(run_id: str, name: str, logy: bool):
        if not run_id or not name:
            return None
        tel = cache.get(run_id)
        if tel is None or name not in tel.layers:
            return None
        return frames_as_update_slider(histogram_figure(tel, name, log_y=bool(logy)))

    def heatmap(run_id: str, key: str):
        tel = cache.get(run_id) if run_id else None
        return heatmap_figure(tel, key or "quant_error") if tel is not None else None

    def load(run_id: str, key: str, logy: bool):
        empty = (gr.update(choices=[], value=None), None, None, None)
        if not run_id:
            return (NO_RUN, *empty)
        try:
            tel = cache.get(run_id)
        except Exception as exc:  # noqa: BLE001 - unreadable telemetry files: say so, keep the page
            log.exception("telemetry of %s", run_id)
            return (f"⚠️ Could not read the telemetry of run `{run_id}`: {type(exc).__name__}: {exc}", *empty)
        if tel is None:
            return (f"Run `{run_id}` has no activation telemetry (recording was off, or the run is not done).",
                    *empty)
        table = worst_table(tel)
        names = layer_names(tel)
        first = table["layer"].iloc[0] if len(table) else names[0]
        text = (f"Run `{run_id}`: {len(names)} layers x {len(tel.timesteps)} timesteps recorded "
                f"({tel.meta.get('recipe', '') or 'quantized vs FP'}).")
        return (text, gr.update(choices=names, value=first), histogram(run_id, first, logy),
                heatmap_figure(tel, key or "quant_error"), table)

    current_run.change(load, [current_run, metric, log_y], [status, layer, hist, heat, worst],
                       api_visibility="private")
    layer.input(histogram, [current_run, layer, log_y], [hist], api_visibility="private")
    log_y.input(histogram, [current_run, layer, log_y], [hist], api_visibility="private")
    metric.input(heatmap, [current_run, metric], [heat], api_visibility="private")
    return {"status": status, "layer": layer, "log_y": log_y, "hist": hist, "metric": metric, "heat": heat,
            "worst": worst, "load": load, "histogram": histogram}
