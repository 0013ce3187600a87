"""RT/ZS — residual truncation and zero suppression ("QuaRTZ", Kim et al., arXiv 2509.26436).

Two things live here, and the docs keep them apart:

1. **QuaRTZ activations** (the paper's method, Sec. 3): activations are first quantized to
   8 bits by round-to-nearest, which keeps outliers; then each group of ``G_s`` consecutive
   values (the paper's leading-zero suppression, LZS) shares one flag: the position of the
   highest set magnitude bit over the group (the bitwise OR of the group's magnitudes).
   Every value keeps its sign and the ``k - 1`` magnitude bits from that position down; the
   less significant bits are truncated. Groups of small values therefore keep full 8-bit
   resolution, groups with an outlier keep its magnitude and lose only low bits. Storage per
   value is ``k + flag_bits / G_s`` bits (3 flag bits for int8 -> int4). qlisten uses the
   abs-max (symmetric) form of the 8-bit stage so that code 0 is x = 0 and small
   activations really have leading zeros; with a zero point they would not.
   :class:`LZSActQuantizer` implements it (static calibrated or dynamic 8-bit scales).

2. **Residual truncation + zero suppression of weights** (the seed summary's variant, kept
   as an option because it helps weights at 2-4 bits): ``W ~ Q_b1(W) + Z(Q_b2(R))`` with
   ``R = W - Q_b1(W)``; residuals with ``|R| < tau * s_main`` are truncated to zero, the rest
   re-quantized with ``b2`` bits (per-group fp16 scale), and only kept residuals are stored,
   positions in the smallest of bitmask / CSR / run-length (measured). ``tau = 0`` is plain
   two-stage residual quantization. :func:`residual_stage` builds it inside a layer.

:func:`rtzs_config` returns the :class:`~backend.quant.config.QuantConfig` for both.
"""

from __future__ import annotations

import math

import torch

from .. import packing
from ..config import QuantConfig
from ..errors import QuantError
from ..layers import ActQuantizer
from ..primitives import qparams_from_range, qrange


def flag_bits(k: int, source_bits: int = 8) -> int:
    """Bits of the shared shift flag: shifts 0 .. (source_bits - 1) - (k - 1)."""
    return math.ceil(math.log2(source_bits - k + 1))


def effective_bits(k: int, group: int, source_bits: int = 8) -> float:
    """Storage per activation: ``k`` bits plus the group's flag spread over its values."""
    return k + flag_bits(k, source_bits) / group


def lzs_truncate(
    q: torch.Tensor, k: int, group: int, rounding: str = "truncate"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading-zero suppression of signed integer codes ``q`` (last axis grouped by ``group``).

    Returns the truncated codes (same shape, same integer grid) and the per-group shift.
    A group whose largest magnitude has its top bit at position ``p`` keeps bits
    ``p .. p-k+2`` of every magnitude: ``shift = max(0, p + 1 - (k - 1))``. ``rounding``
    ``"truncate"`` drops the low bits (the paper's wording); ``"nearest"`` rounds the kept
    magnitude to nearest and saturates at ``2**(k-1) - 1`` — same storage, half the
    worst-case error and no bias toward zero.
    """
    c = q.shape[-1]
    if c % group:
        raise QuantError(f"LZS group size {group} does not divide {c} channels")
    qi = q.to(torch.int32)
    mag = qi.abs().reshape(*q.shape[:-1], c // group, group)
    top = mag.amax(dim=-1, keepdim=True)
    # position of the highest set bit (top > 0); frexp gives top = m * 2**e with m in [0.5, 1)
    pos = torch.frexp(top.float().clamp(min=1.0))[1] - 1
    shift = torch.clamp(pos + 1 - (k - 1), min=0)
    if rounding == "nearest":
        step = (1 << shift).float()
        kept = (torch.round(mag.float() / step).clamp(max=2 ** (k - 1) - 1) * step).to(torch.int32)
    elif rounding == "truncate":
        kept = (mag >> shift) << shift
    else:
        raise QuantError(f"LZS rounding {rounding!r} unknown; use 'truncate' or 'nearest'")
    out = (torch.sign(qi).reshape(kept.shape) * kept).reshape(q.shape)
    return out, shift.squeeze(-1)


class LZSActQuantizer(ActQuantizer):
    """QuaRTZ activation quantizer: 8-bit abs-max RTN, then LZS to ``target_bits``.

    Scales of the 8-bit stage are static (calibrated, per timestep bucket) or dynamic like
    any :class:`ActQuantizer`; the LZS groups run along the channel axis.
    """

    def __init__(
        self, target_bits: int, lzs_group: int, mode: str, granularity: str, group_size: int,
        channels: int, n_buckets: int = 1, rounding: str = "nearest",
    ) -> None:
        super().__init__(8, True, mode, granularity, group_size, channels, n_buckets)
        if channels % lzs_group:
            raise QuantError(f"LZS group size {lzs_group} does not divide {channels} channels")
        self.target_bits, self.lzs_group, self.rounding = target_bits, lzs_group, rounding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, z = self.qparams(x)
        qmin, qmax = qrange(8, True)
        xg = self._grouped(x.float())
        q = torch.clamp(torch.round(xg / s) + z, qmin, qmax).reshape(x.shape)
        q, _ = lzs_truncate(q, self.target_bits, self.lzs_group, self.rounding)
        return (self._grouped(q.float()) * s).reshape(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"QuaRTZ A8->A{self.target_bits} LZS(G={self.lzs_group}), "
                f"{effective_bits(self.target_bits, self.lzs_group):.3f} bits/value, {self.mode}")


def residual_stage(
    g: torch.Tensor, main: torch.Tensor, main_scale: torch.Tensor, bits: int, threshold: float
) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize the residual of a grouped weight ``g`` (rows, groups, k) after ``main``.

    Residuals with ``|R| < threshold * main_scale`` are truncated to zero (zero
    suppression); the others get ``bits``-bit symmetric codes with one fp16 scale per group.
    Returns (metadata, packed residual codes, encoded mask, fp16 scales).
    """
    resid = g - main
    mask = resid.abs() >= threshold * main_scale
    if threshold == 0.0:
        mask = torch.ones_like(mask)
    nnz = int(mask.sum())
    qmin, qmax = qrange(bits, True)
    absmax = torch.where(mask, resid.abs(), torch.zeros_like(resid)).amax(dim=-1, keepdim=True)
    scale, _ = qparams_from_range(-absmax, absmax, bits, True)
    scale16 = torch.clamp(scale, min=2.0**-24, max=65504.0).half()
    codes = torch.clamp(torch.round(resid / scale16.float()), qmin, qmax)
    kept = codes[mask] - qmin
    packed = packing.pack(kept.to(torch.int32), bits) if nnz else torch.zeros(0, dtype=torch.uint8)
    rows = g.shape[0]
    encoding, index = packing.smallest_mask_encoding(mask.reshape(rows, -1))
    meta = {
        "bits": bits, "nnz": nnz, "numel": mask.numel(), "encoding": encoding,
        "packed_nbytes": int(packed.numel()), "index_nbytes": int(index.numel()),
        "mask_shape": [rows, mask.numel() // rows], "sparsity": 1.0 - nnz / mask.numel(),
    }
    return meta, packed, index, scale16


def decode_residual(
    meta: dict, packed: torch.Tensor, index: torch.Tensor, scale: torch.Tensor, shape: torch.Size
) -> torch.Tensor:
    """Dense float residual (grouped view ``shape``) from its stored form."""
    rows, cols = meta["mask_shape"]
    mask = packing.decode_mask(index, meta["encoding"], (rows, cols), meta["nnz"]).reshape(shape)
    qmin, _ = qrange(meta["bits"], True)
    codes = torch.zeros(shape)
    codes[mask] = (packing.unpack(packed, meta["bits"], meta["nnz"]) + qmin).float()
    return codes * scale.float()


def rtzs_config(
    base: QuantConfig,
    *,
    act_bits: int | None = 4,
    lzs_group: int = 16,
    lzs_rounding: str = "nearest",
    residual_bits: int | None = None,
    residual_threshold: float = 0.0,
) -> QuantConfig:
    """The RT/ZS recipe on top of ``base`` (weights as in ``base``).

    ``act_bits`` + ``lzs_group``: QuaRTZ activations (``None`` keeps ``base``'s
    activations); ``residual_bits`` + ``residual_threshold``: the weight residual stage.
    """
    changes: dict = {"residual_bits": residual_bits, "residual_threshold": residual_threshold}
    if act_bits is not None:
        changes.update(a_bits=act_bits, act_lzs_group=lzs_group, act_lzs_rounding=lzs_rounding,
                       a_symmetric=True)
    return base.replace(**changes)
