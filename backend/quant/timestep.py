"""Which denoising timestep is running, for layers deep inside the denoiser.

Static per-timestep activation scales and per-timestep statistics need the current
timestep inside every quantized layer, but diffusers only passes it to the top-level
denoiser ``forward``. A forward pre-hook on the denoiser reads it (keyword ``timestep`` or
the second positional argument, as in ``unet(latents, t, ...)``) into a small shared
state object that the layers hold a reference to. The hook is a callable object (not a
closure) so ``copy.deepcopy`` of the model copies it together with the layers' references.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_ATTR = "_qlisten_timestep_tracker"


class TimestepTracker:
    """Holds the current timestep (a float) of one denoiser, or ``None`` outside a call."""

    def __init__(self) -> None:
        self.t: float | None = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        t: Any = kwargs.get("timestep", kwargs.get("t"))
        if t is None and len(args) > 1:
            t = args[1]
        self.t = _as_float(t)


def _as_float(t: Any) -> float | None:
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        if t.numel() == 0:
            return None
        return float(t.reshape(-1)[0])
    try:
        return float(t)
    except (TypeError, ValueError):
        return None


def timestep_key(t: float | None) -> int:
    """Dictionary key of a timestep: rounded to an integer (``-1`` when unknown).

    DDPM-family schedulers use integer timesteps in [0, 1000); flow-matching ones use
    ``1000 * sigma``: rounding keeps distinct steps distinct at the step counts used here.
    """
    return -1 if t is None else int(round(t))


def attach_timestep_tracker(root: nn.Module) -> TimestepTracker:
    """Install (once) and return the tracker of ``root``."""
    tracker = getattr(root, _ATTR, None)
    if tracker is None:
        tracker = TimestepTracker()
        root.register_forward_pre_hook(tracker, with_kwargs=True)
        object.__setattr__(root, _ATTR, tracker)
    return tracker


def get_timestep_tracker(root: nn.Module) -> TimestepTracker | None:
    """The tracker installed on ``root``, if any."""
    return getattr(root, _ATTR, None)
