"""Quantization recipes as small frozen dataclasses (torchao style: one config per recipe).

A :class:`QuantConfig` says how every quantizable layer of a denoiser is treated; per-module
:class:`LayerOverride` entries (matched by ``fnmatch`` pattern on the qualified module name,
last match wins) change that for some layers, which is how mixed precision and "keep this
in FP" are expressed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from .errors import QuantError

WEIGHT_BITS = (2, 3, 4, 6, 8)
ACT_BITS = (4, 6, 8)
Granularity = Literal["tensor", "channel", "group"]
ActGranularity = Literal["tensor", "token", "group"]
ScaleMethod = Literal["minmax", "percentile", "mse"]
ActMode = Literal["static", "dynamic"]

#: Modules kept in full precision unless an override says otherwise. Why each:
#:
#: * ``pos_embed.*``, ``patch_embed*``, ``conv_in``, ``proj_in`` at the root: the input
#:   projection sees raw latents/noise whose range spans the whole noise schedule; it is a
#:   tiny layer, so quantizing it saves almost nothing and adds error to every token.
#: * timestep / class / caption embedders (``*timestep_embedder*``, ``*time_embed*``,
#:   ``*time_proj*``, ``*class_embed*``, ``*caption_projection*``, ``*add_embedding*``,
#:   ``*emb.*``, ``*adaln_single.emb*``): their output modulates every block (adaLN shift,
#:   scale, gate), so a small error there is multiplied into all layers; they are small.
#: * embeddings and norms (``nn.Embedding``, LayerNorm, GroupNorm, RMSNorm) are never
#:   wrapped at all: only ``nn.Linear`` and ``nn.Conv2d`` are quantizable. The adaLN
#:   *modulation* Linear inside a norm block (``norm1.linear``) is a large matmul and is
#:   quantized by default as Q-DiT does; add ``"*norm*.linear"`` to ``skip`` to keep it FP.
#: * the final projection (``proj_out``, ``proj_out_*`` and ``conv_out`` at the root): it
#:   writes the predicted noise/velocity directly, so its error lands in the sample
#:   unfiltered.
DEFAULT_SKIP: tuple[str, ...] = (
    "pos_embed.*",
    "patch_embed*",
    "conv_in",
    "proj_in",
    "*timestep_embedder*",
    "*time_embed*",
    "*time_proj*",
    "*class_embed*",
    "*caption_projection*",
    "*add_embedding*",
    "*emb.*",
    "proj_out",
    "proj_out_*",
    "conv_out",
)


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer changes to a :class:`QuantConfig`; ``None`` fields keep the global value.

    ``skip=True`` keeps the layer in FP (and the report says so, with ``reason``).
    """

    w_bits: int | None = None
    a_bits: int | None = None
    w_group_size: int | None = None
    a_group_size: int | None = None
    w_granularity: Granularity | None = None
    a_granularity: ActGranularity | None = None
    skip: bool = False
    keep_fp_weights: bool = False  # W stays FP but activations still quantized
    keep_fp_activations: bool = False  # A stays FP but weights still quantized
    smooth_alpha: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class QuantConfig:
    """One quantization recipe for a whole denoiser.

    Weights: ``w_bits`` in {2,3,4,6,8} or ``None`` (FP); ``w_granularity`` per ``tensor``,
    per output ``channel`` or per ``group`` of ``w_group_size`` input channels;
    ``w_symmetric``; scale choice ``w_scale_method`` (min-max, percentile or MSE-optimal
    clipping search).

    Activations: ``a_bits`` in {4,6,8} or ``None``. ``a_mode="static"`` uses scales
    calibrated from recorded statistics (one set for all timesteps, or one per timestep
    bucket with ``a_timestep_buckets``); ``a_mode="dynamic"`` computes scale and zero point
    on the fly for every call, i.e. per sample and per timestep, and per group of
    ``a_group_size`` channels with ``a_granularity="group"`` (Q-DiT's sample-wise dynamic
    activation quantization), per token with ``"token"``, or per sample with ``"tensor"``.

    ``compute="int8"`` runs W8A8 layers through a real integer matmul (``torch._int_mm``,
    int32 accumulation); ``"auto"`` does so where a layer's recipe allows it AND this CPU has a
    fast int8 kernel (:func:`backend.quant.int8_kernel.int8_matmul_is_fast`: AVX2-only CPUs
    do not); ``"fake"`` always uses the dequantize-then-float reference.
    """

    w_bits: int | None = 8
    a_bits: int | None = None
    w_granularity: Granularity = "channel"
    w_group_size: int = 128
    w_symmetric: bool = True
    w_scale_method: ScaleMethod = "minmax"
    a_granularity: ActGranularity = "tensor"
    a_group_size: int = 128
    a_symmetric: bool = False
    a_mode: ActMode = "static"
    a_scale_method: ScaleMethod = "minmax"
    a_timestep_buckets: int | None = None
    percentile: float = 99.99
    mse_grid: int = 40
    mse_min_ratio: float = 0.3
    skip: tuple[str, ...] = DEFAULT_SKIP
    overrides: tuple[tuple[str, LayerOverride], ...] = ()
    compute: Literal["fake", "int8", "auto"] = "auto"
    quantize_conv: bool = True
    # -- method options (see backend/quant/methods) ----------------------------------------
    #: SmoothQuant-style migration strength; ``None`` = off, ``"search"`` = per-layer grid
    #: search of alpha on calibration rows (methods/smoothing.py).
    smooth_alpha: float | str | None = None
    #: rank of an FP16 low-rank branch absorbing the weight's top singular directions
    lowrank_rank: int = 0
    #: RT/ZS weights: bits of the re-quantized residual (``None`` = no residual stage) and the
    #: truncation threshold in units of the main quantization step (methods/rtzs.py)
    residual_bits: int | None = None
    residual_threshold: float = 0.0
    #: RT/ZS activations (QuaRTZ): group size of the leading-zero-suppression stage that
    #: compresses 8-bit codes to ``a_bits``; ``None`` = plain affine activations
    act_lzs_group: int | None = None
    #: how LZS drops low bits: "truncate" (the paper's wording) or "nearest" (same storage)
    act_lzs_rounding: Literal["truncate", "nearest"] = "nearest"

    def __post_init__(self) -> None:
        if self.w_bits is not None and self.w_bits not in WEIGHT_BITS:
            raise QuantError(f"weight bits {self.w_bits} unsupported; choose one of {WEIGHT_BITS} or None")
        if self.a_bits is not None and self.a_bits not in ACT_BITS:
            raise QuantError(f"activation bits {self.a_bits} unsupported; choose one of {ACT_BITS} or None")
        if self.w_granularity not in ("tensor", "channel", "group"):
            raise QuantError(f"weight granularity {self.w_granularity!r} unknown")
        if self.a_granularity not in ("tensor", "token", "group"):
            raise QuantError(f"activation granularity {self.a_granularity!r} unknown")
        if self.a_mode not in ("static", "dynamic"):
            raise QuantError(f"activation mode {self.a_mode!r} unknown; use 'static' or 'dynamic'")
        for name in ("w_scale_method", "a_scale_method"):
            if getattr(self, name) not in ("minmax", "percentile", "mse"):
                raise QuantError(f"{name} {getattr(self, name)!r} unknown")
        for name in ("w_group_size", "a_group_size"):
            if getattr(self, name) < 1:
                raise QuantError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 50.0 < self.percentile <= 100.0:
            raise QuantError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.a_timestep_buckets is not None and self.a_timestep_buckets < 1:
            raise QuantError("a_timestep_buckets must be >= 1 or None")
        if self.a_mode == "static" and self.a_granularity == "token":
            raise QuantError("per-token activation scales exist only in dynamic mode")
        if self.compute not in ("fake", "int8", "auto"):
            raise QuantError(f"compute {self.compute!r} unknown; use 'fake', 'int8' or 'auto'")
        if isinstance(self.smooth_alpha, str) and self.smooth_alpha != "search":
            raise QuantError("smooth_alpha must be a number in [0, 1], 'search' or None")
        if isinstance(self.smooth_alpha, float | int) and not 0.0 <= self.smooth_alpha <= 1.0:
            raise QuantError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")
        if self.lowrank_rank < 0:
            raise QuantError("lowrank_rank must be >= 0")
        if self.residual_bits is not None and self.residual_bits not in WEIGHT_BITS:
            raise QuantError(f"residual bits {self.residual_bits} unsupported; choose one of {WEIGHT_BITS}")
        if self.residual_bits is not None and self.w_bits is None:
            raise QuantError("residual quantization needs weight bits")
        if not 0.0 <= self.residual_threshold <= 10.0:
            raise QuantError("residual_threshold is in units of the main step and must be in [0, 10]")
        if self.act_lzs_group is not None:
            if self.a_bits is None or self.a_bits >= 8:
                raise QuantError("leading-zero suppression compresses 8-bit codes: set a_bits to 4 or 6")
            if self.act_lzs_group < 1:
                raise QuantError("act_lzs_group must be >= 1")
        if self.act_lzs_rounding not in ("truncate", "nearest"):
            raise QuantError("act_lzs_rounding must be 'truncate' or 'nearest'")
        for pattern, ov in self.overrides:
            if not isinstance(ov, LayerOverride):
                raise QuantError(f"override for {pattern!r} must be a LayerOverride")
            if ov.w_bits is not None and ov.w_bits not in WEIGHT_BITS:
                raise QuantError(f"override {pattern!r}: weight bits {ov.w_bits} unsupported")
            if ov.a_bits is not None and ov.a_bits not in ACT_BITS:
                raise QuantError(f"override {pattern!r}: activation bits {ov.a_bits} unsupported")

    @property
    def needs_calibration(self) -> bool:
        """Static activation quantization needs recorded statistics."""
        return self.a_bits is not None and self.a_mode == "static"

    def replace(self, **changes: object) -> QuantConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready form (overrides as a list of [pattern, fields])."""
        d = dataclasses.asdict(self)
        d["skip"] = list(self.skip)
        d["overrides"] = [[p, dataclasses.asdict(o)] for p, o in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["skip"] = tuple(d.get("skip", DEFAULT_SKIP))
        d["overrides"] = tuple((p, LayerOverride(**o)) for p, o in d.get("overrides", ()))
        return cls(**d)


@dataclass(frozen=True)
class LayerRecipe:
    """The resolved recipe for one layer after skip list and overrides are applied."""

    w_bits: int | None
    a_bits: int | None
    w_granularity: Granularity
    w_group_size: int
    w_symmetric: bool
    w_scale_method: ScaleMethod
    a_granularity: ActGranularity
    a_group_size: int
    a_symmetric: bool
    a_mode: ActMode
    a_scale_method: ScaleMethod
    smooth_alpha: float | str | None = None
    lowrank_rank: int = 0
    residual_bits: int | None = None
    residual_threshold: float = 0.0
    act_lzs_group: int | None = None
    act_lzs_rounding: str = "nearest"
    notes: tuple[str, ...] = field(default=())
