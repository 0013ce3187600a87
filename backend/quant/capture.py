"""Denoiser calls captured during a sampling loop, replayed to measure output error.

Several methods need a cheap, model-agnostic "how much does quantization change the
denoiser's prediction" signal: mixed-precision sensitivity, Q-DiT's proxy fitness, alpha
search checks. A forward pre-hook on the denoiser stores the exact inputs of each call
(latents, timestep, conditioning) while a pipeline samples; :func:`output_error` replays
them through any (quantized) copy and compares with the FP outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import QuantError


def _detach(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_detach(v) for v in obj)
    return obj


def first_tensor(out: Any) -> torch.Tensor:
    """The prediction tensor of a denoiser output (diffusers output object, tuple or tensor)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise QuantError(f"cannot find the prediction tensor in a {type(out).__name__}")


@dataclass
class CapturedCalls:
    """Inputs of denoiser calls and the FP predictions they produced."""

    calls: list[tuple[tuple, dict]] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.calls)

    def subset(self, every: int) -> CapturedCalls:
        """Every ``every``-th call (a cheaper replay set)."""
        return CapturedCalls(self.calls[::every], self.outputs[::every])


def capture_calls(denoiser: nn.Module, run: Callable[[], Any], max_calls: int | None = None) -> CapturedCalls:
    """Record the inputs and FP outputs of ``denoiser``'s calls while ``run()`` samples."""
    captured = CapturedCalls()

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if max_calls is None or len(captured.calls) < max_calls:
            captured.calls.append((_detach(args), _detach(kwargs)))

    def post(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if len(captured.outputs) < len(captured.calls):
            captured.outputs.append(first_tensor(out).detach().clone())

    h1 = denoiser.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = denoiser.register_forward_hook(post, with_kwargs=True)
    try:
        with torch.no_grad():
            run()
    finally:
        h1.remove()
        h2.remove()
    if not captured.calls:
        raise QuantError("the calibration run never called the denoiser")
    return captured


@torch.no_grad()
def output_error(denoiser: nn.Module, captured: CapturedCalls) -> float:
    """Mean over calls of ``||f_q(x) - f_fp(x)||^2 / ||f_fp(x)||^2`` (relative MSE)."""
    total = 0.0
    for (args, kwargs), ref in zip(captured.calls, captured.outputs):
        out = first_tensor(denoiser(*args, **kwargs)).float()
        total += float((out - ref.float()).pow(2).mean() / ref.float().pow(2).mean().clamp_min(1e-12))
    return total / len(captured.calls)
