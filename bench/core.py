"""Core benchmark: stored bytes of packed weights and the W8A8 integer path's CPU latency.

``python -m bench.core`` builds a DiT-shaped stack at DiT-XL/2 width (hidden 1152, 16 heads
of 72, ``--blocks`` transformer blocks, random weights: sizes and speed do not depend on
trained values) with diffusers' ``DiTTransformer2DModel`` and measures

* stored bytes of every quantized layer at W8 (per channel), W4 (group 128) and W2
  (group 128) as a ratio to FP32 and to the ideal ``bits / 32`` — both without and with
  the scale overhead (fp16 scales, one per channel or group);
* latency of one Linear (FF up-projection, 1152 -> 4608, 512 tokens: DiT-XL/2 at 256 px
  with CFG doubles 256 tokens) and of the whole denoiser forward at FP32 vs W8A8 through
  the integer path (``torch._int_mm``), vs the W8A8 fake-quant reference, same run.

Writes bench/results/core.{json,md}.
"""

from __future__ import annotations

import argparse
import copy

import torch
from diffusers import DiTTransformer2DModel
from torch import nn

from backend.quant import QuantConfig, quantize, quantized_layers

from .common import environment, time_call, write_results


def dit_stack(blocks: int) -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
        num_layers=blocks, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
    ).eval()


def size_rows(model: nn.Module) -> list[dict]:
    recipes = {
        "W8 per-channel": QuantConfig(w_bits=8),
        "W4 group-128": QuantConfig(w_bits=4, w_granularity="group", w_group_size=128),
        "W3 group-128": QuantConfig(w_bits=3, w_granularity="group", w_group_size=128),
        "W2 group-128": QuantConfig(w_bits=2, w_granularity="group", w_group_size=128),
    }
    rows = []
    for label, cfg in recipes.items():
        m = copy.deepcopy(model)
        report = quantize(m, cfg)
        layers = quantized_layers(m)
        weight_fp = sum(q.fp_bytes() - (q.bias.numel() * 4 if q.bias is not None else 0)
                        for q in layers.values())
        weight_stored = sum(q.weight_stored_bytes() for q in layers.values())
        scale_bytes = sum(q.w_scale.numel() * 2 for q in layers.values())
        ideal = weight_fp * cfg.w_bits / 32
        rows.append({
            "recipe": label, "bits": cfg.w_bits, "layers": len(layers),
            "weight_fp32_bytes": weight_fp, "weight_stored_bytes": weight_stored,
            "ratio_to_fp32": weight_stored / weight_fp,
            "ratio_to_ideal": weight_stored / ideal,
            "ratio_to_ideal_plus_scales": weight_stored / (ideal + scale_bytes),
            "denoiser_stored_bytes": report.model_stored_bytes,
            "denoiser_fp32_bytes": report.model_fp_bytes,
            "denoiser_ratio": report.compression,
        })
        del m
    return rows


def latency_rows(model: nn.Module, tokens: int, repeats: int) -> list[dict]:
    rows = []
    torch.manual_seed(1)
    lin = nn.Linear(1152, 4608)
    x = torch.randn(tokens, 1152)
    variants = {"FP32": None,
                "W8A8 int8 (static per-tensor)": QuantConfig(w_bits=8, a_bits=8, compute="int8", skip=()),
                "W8A8 int8 (dynamic per-token)": QuantConfig(
                    w_bits=8, a_bits=8, a_mode="dynamic", a_granularity="token", compute="int8", skip=()),
                "W8A8 fake-quant (static per-tensor)": QuantConfig(
                    w_bits=8, a_bits=8, compute="fake", skip=())}
    base = None
    with torch.no_grad():
        for label, cfg in variants.items():
            seq = nn.Sequential(copy.deepcopy(lin))
            if cfg is not None:
                quantize(seq, cfg, calibration=lambda s=seq: s(x))
            t = time_call(lambda s=seq: s(x), repeats=repeats)
            base = base or t["median_ms"]
            rows.append({"what": f"Linear 1152->4608, {tokens} tokens", "variant": label, **t,
                         "ratio_to_fp32": t["median_ms"] / base})
        g = torch.Generator().manual_seed(2)
        lat = torch.randn(2, 4, 32, 32, generator=g)
        ts, labels = torch.tensor([500, 500]), torch.tensor([1, 2])

        def fwd(m):
            return m(lat, timestep=ts, class_labels=labels).sample

        base = None
        for label, cfg in {"FP32": None,
                           "W8A8 int8 (static per-tensor)": QuantConfig(w_bits=8, a_bits=8, compute="int8"),
                           "W8A8 fake-quant": QuantConfig(w_bits=8, a_bits=8, compute="fake")}.items():
            m = copy.deepcopy(model)
            if cfg is not None:
                quantize(m, cfg, calibration=lambda m=m: fwd(m))
            t = time_call(lambda m=m: fwd(m), repeats=max(3, repeats // 2))
            base = base or t["median_ms"]
            rows.append({"what": "DiT-XL-width denoiser forward, batch 2 x 256 tokens", "variant": label,
                         **t, "ratio_to_fp32": t["median_ms"] / base})
            del m
    return rows


def to_markdown(env: dict, sizes: list[dict], lat: list[dict], blocks: int) -> str:
    out = [
        "# bench.core",
        "",
        f"DiT-shaped stack: diffusers DiTTransformer2DModel, hidden 1152 (DiT-XL/2 width), "
        f"{blocks} blocks. Environment: torch {env['torch']}, {env['threads']} threads, "
        f"{env['cpu_capability']}.",
        "",
        "## Stored bytes of quantized layers' weights",
        "",
        "| recipe | layers | FP32 MB | stored MB | / FP32 | / ideal bits/32 | / (ideal + fp16 scales) "
        "| whole denoiser / FP32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        out.append(
            f"| {r['recipe']} | {r['layers']} | {r['weight_fp32_bytes'] / 2**20:.2f} | "
            f"{r['weight_stored_bytes'] / 2**20:.2f} | {r['ratio_to_fp32']:.4f} | "
            f"{r['ratio_to_ideal']:.4f} | "
            f"{r['ratio_to_ideal_plus_scales']:.4f} | {r['denoiser_ratio']:.4f} |"
        )
    out += ["", "(The whole-denoiser column also counts the layers the default skip list keeps in FP32 "
            "— patch embedding, timestep/class embedders, final projection — and biases.)", "",
            "## CPU latency, same run", "", "| what | variant | median ms | ratio to FP32 |",
            "|---|---|---|---|"]
    for r in lat:
        out.append(f"| {r['what']} | {r['variant']} | {r['median_ms']:.2f} | {r['ratio_to_fp32']:.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment()
    model = dit_stack(args.blocks)
    sizes = size_rows(model)
    lat = latency_rows(model, args.tokens, args.repeats)
    payload = {"environment": env, "blocks": args.blocks, "sizes": sizes, "latency": lat}
    md = to_markdown(env, sizes, lat, args.blocks)
    jpath, mpath = write_results("core", payload, md)
    print(md)
    print(f"\nwrote {jpath} and {mpath}")


if __name__ == "__main__":
    main()
