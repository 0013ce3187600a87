"""Activation telemetry: per-layer, per-timestep histograms of FP and quantized runs,
quantization error and clipping, and the plotly figures the app shows.

    tel = capture_telemetry(fp_denoiser, q_denoiser, lambda m: sample(m, prompts, seeds))
    tel.save(run_dir / "telemetry")
    fig = histogram_figure(tel, layer_names(tel)[0])
"""

from .capture import (
    DEFAULT_BINS,
    DEFAULT_MAX_LAYERS,
    QuantErrorRecorder,
    Telemetry,
    capture_telemetry,
    downsample,
    pick_layers,
    quant_stats,
)
from .figures import METRICS, heatmap_figure, histogram_figure, layer_names, to_html, worst_layers

__all__ = [
    "DEFAULT_BINS", "DEFAULT_MAX_LAYERS", "METRICS", "QuantErrorRecorder", "Telemetry",
    "capture_telemetry", "downsample", "heatmap_figure", "histogram_figure", "layer_names",
    "pick_layers", "quant_stats", "to_html", "worst_layers",
]
