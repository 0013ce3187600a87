"""``python -m backend.telemetry.demo``: telemetry of a tiny DiT (built in code, offline),
W4 A4 static vs FP, written as one self-contained HTML page (and a PNG if kaleido exists).

It exists so a person can look at the figures without the app, and so the figures are
checked by eye on a real (if tiny) quantized denoiser.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from torch import nn

from backend.quant import QuantConfig, calibrate, quantize

from .capture import Telemetry, capture_telemetry
from .figures import heatmap_figure, histogram_figure, to_html, worst_layers

TIMESTEPS = (900, 500, 100)


def tiny_dit() -> nn.Module:
    """A 2-block DiT with random weights (seeded): the smallest real diffusers denoiser."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
    ).eval()


def sample_loop(model: nn.Module, timesteps: tuple[int, ...] = TIMESTEPS, seed: int = 1) -> None:
    """A fixed-seed pass over the timesteps (the same inputs for FP and quantized runs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        for t in timesteps:
            out = model(x, timestep=torch.tensor([t, t]), class_labels=labels).sample
            x = 0.9 * x + 0.1 * out[:, :4]


def tiny_telemetry(a_bits: int = 4, a_mode: str = "static") -> Telemetry:
    """Telemetry of the tiny DiT quantized W4 (groups of 32) with ``a_bits`` activations."""
    fp = tiny_dit()
    record = calibrate(fp, lambda: sample_loop(fp))
    q = copy.deepcopy(fp)
    quantize(q, QuantConfig(w_bits=4, w_granularity="group", w_group_size=32, a_bits=a_bits,
                            a_mode=a_mode), calibration=record)
    return capture_telemetry(fp, q, sample_loop, meta={"model": "tiny DiT", "a_bits": a_bits})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="/tmp/telemetry_demo.html")
    ap.add_argument("--a-bits", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tel = tiny_telemetry(args.a_bits)
    worst = worst_layers(tel, k=5)
    layer = worst[0]["layer"]
    figs = [histogram_figure(tel, layer), heatmap_figure(tel, "quant_error"),
            heatmap_figure(tel, "absmax"), heatmap_figure(tel, "clipped_fraction")]
    Path(args.out).write_text(to_html(figs, f"Activation telemetry — tiny DiT W4A{args.a_bits}"))
    print(f"wrote {args.out}")
    for row in worst:
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
    try:
        import kaleido  # noqa: F401

        png = Path(args.out).with_suffix(".png")
        figs[0].write_image(png)
        print(f"wrote {png}")
    except ImportError:
        print("kaleido is not installed: no PNG (open the HTML page instead)")


if __name__ == "__main__":
    main()
