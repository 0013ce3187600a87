"""Quantized Linear / Conv2d wrappers holding packed integer weights.

A wrapper keeps the weight only as packed codes (:mod:`.packing`) plus float16 scales and,
for asymmetric recipes, uint8 zero points; those buffers are what ``state_dict`` and
:func:`backend.quant.serialization.save_quantized` store and what the report counts. A
dequantized float copy is rebuilt from them on first use and cached outside the state
dict (a speed choice for fake-quant inference, freed by :meth:`QuantWeightMixin.drop_cache`).

Activations go through an :class:`ActQuantizer` (static calibrated scales, optionally per
timestep bucket, or dynamic per-call scales). W8A8 Linear layers whose scales are constant
along the reduction axis can run a real integer matmul (``torch._int_mm``, int8 x int8 ->
int32) that equals the fake-quant reference up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import packing
from .config import LayerRecipe
from .errors import QuantError
from .primitives import choose_qparams, group_view, qparams_from_range, qrange
from .timestep import TimestepTracker

_FP16_TINY = 2.0**-24


def _to_fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """Round scales to float16 (their stored form) so codes are computed with the stored value."""
    return torch.clamp(scale, min=_FP16_TINY, max=65504.0).half()


class ActQuantizer(nn.Module):
    """Fake-quantizes a layer's input activations (channels last).

    * ``static``: ``scales``/``zeros`` buffers of shape ``(n_buckets, n_groups)`` from
      calibration; ``bounds`` (``n_buckets - 1`` timestep thresholds, descending sampling
      order does not matter) pick the bucket of the current timestep. Outside a tracked
      call the bucket holding most calibration data (``default_bucket``) is used.
    * ``dynamic``: scale and zero point computed from each call's own values, per sample
      (``tensor``), per token (``token``) or per sample and group of channels (``group``) —
      Q-DiT's sample-wise dynamic quantization; a new call is a new timestep, so scales are
      per timestep too.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool,
        mode: str,
        granularity: str,
        group_size: int,
        channels: int,
        n_buckets: int = 1,
    ) -> None:
        super().__init__()
        self.bits, self.symmetric, self.mode = bits, symmetric, mode
        self.granularity, self.group_size, self.channels = granularity, group_size, channels
        if granularity == "group" and channels % group_size:
            raise QuantError(
                f"activation group size {group_size} does not divide {channels} channels"
            )
        self.n_groups = channels // group_size if granularity == "group" else 1
        self.tracker: TimestepTracker | None = None
        if mode == "static":
            self.register_buffer("scales", torch.ones(n_buckets, self.n_groups))
            self.register_buffer("zeros", torch.zeros(n_buckets, self.n_groups))
            self.register_buffer("bounds", torch.zeros(max(n_buckets - 1, 0)))
            self.register_buffer("default_bucket", torch.zeros((), dtype=torch.long))

    # -- static calibration -------------------------------------------------------------
    def set_static(
        self,
        lo: torch.Tensor,
        hi: torch.Tensor,
        bounds: torch.Tensor,
        default_bucket: int = 0,
    ) -> None:
        """Set static ranges: ``lo``/``hi`` of shape ``(n_buckets, n_groups)``."""
        s, z = qparams_from_range(lo, hi, self.bits, self.symmetric)
        self.scales.copy_(s)
        self.zeros.copy_(z)
        self.bounds.copy_(bounds)
        self.default_bucket.fill_(default_bucket)

    def _bucket(self) -> int:
        t = None if self.tracker is None else self.tracker.t
        if t is None or self.bounds.numel() == 0:
            return int(self.default_bucket) if t is None else 0
        return int(torch.searchsorted(self.bounds, torch.tensor(float(t))))

    # -- scale and zero point for one call ------------------------------------------------
    def qparams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point broadcastable to ``x`` viewed as ``(..., n_groups, G)``.

        ``x`` is channels-last, shape ``(B, ..., C)``.
        """
        if self.mode == "static":
            b = self._bucket()
            s, z = self.scales[b], self.zeros[b]
            if self.granularity == "group":
                return s.unsqueeze(-1), z.unsqueeze(-1)
            return s.reshape(()), z.reshape(())
        xf = x.detach().float()
        if self.granularity == "token":
            lo, hi = xf.amin(-1, keepdim=True), xf.amax(-1, keepdim=True)
        elif self.granularity == "tensor":
            dims = tuple(range(1, xf.dim()))
            lo, hi = xf.amin(dims, keepdim=True), xf.amax(dims, keepdim=True)
        else:
            g = xf.reshape(xf.shape[0], -1, self.n_groups, self.group_size)
            lo = g.amin(dim=(1, 3), keepdim=True)
            hi = g.amax(dim=(1, 3), keepdim=True)
            lo = lo.reshape(lo.shape[0], *([1] * (xf.dim() - 2)), self.n_groups, 1)
            hi = hi.reshape(lo.shape)
        return qparams_from_range(lo, hi, self.bits, self.symmetric)

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        if self.granularity == "group":
            return x.reshape(*x.shape[:-1], self.n_groups, self.group_size)
        return x

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integer codes of ``x`` (same shape, int16) with their scale and zero point."""
        s, z = self.qparams(x)
        qmin, qmax = qrange(self.bits, self.symmetric)
        xg = self._grouped(x.float())
        q = torch.clamp(torch.round(xg / s) + z, qmin, qmax)
        return q.reshape(x.shape).to(torch.int16), s, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, z = self.qparams(x)
        qmin, qmax = qrange(self.bits, self.symmetric)
        xg = self._grouped(x.float())
        xq = (torch.clamp(torch.round(xg / s) + z, qmin, qmax) - z) * s
        return xq.reshape(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"A{self.bits} {self.mode} {self.granularity}" + (
            f"(G={self.group_size})" if self.granularity == "group" else ""
        )

    def stored_bytes(self) -> int:
        """Static scales (fp32) and zero points (fp32) are stored; dynamic ones are not."""
        if self.mode != "static":
            return 0
        return int(self.scales.numel() * 4 + (0 if self.symmetric else self.zeros.numel() * 4))


class QuantWeightMixin:
    """Packed-weight storage shared by :class:`QuantLinear` and :class:`QuantConv2d`.

    Besides the main packed codes a layer may hold the parts some methods add, each stored
    and counted: a per-input-channel smoothing vector (SmoothQuant migration, fp32), an FP16
    low-rank branch ``lr_up @ lr_down`` (SVD, audio-DiT PTQ paper) and a zero-suppressed
    residual stage (RT/ZS: residual codes only where the mask is set, the mask in its
    smallest sparse encoding).
    """

    recipe: LayerRecipe
    w_shape: tuple[int, ...]

    def _init_weight_buffers(self, w2d_shape: tuple[int, int], residual_meta: dict | None = None) -> None:
        r = self.recipe
        out_f, in_f = w2d_shape
        self._w2d_shape = w2d_shape
        self._cache: torch.Tensor | None = None
        self._int8_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.residual_meta: dict | None = None
        if r.smooth_alpha is not None:
            self.register_buffer("smooth", torch.ones(in_f))
        else:
            self.smooth = None
        if r.lowrank_rank:
            rank = min(r.lowrank_rank, out_f, in_f)
            self.register_buffer("lr_up", torch.zeros(out_f, rank, dtype=torch.float16))
            self.register_buffer("lr_down", torch.zeros(rank, in_f, dtype=torch.float16))
        else:
            self.lr_up = self.lr_down = None
        if r.w_bits is None:
            self.register_buffer("weight_fp", torch.zeros(w2d_shape))
            return
        if r.w_granularity == "tensor":
            rows, groups = 1, 1
        elif r.w_granularity == "channel":
            rows, groups = out_f, 1
        else:
            if in_f % r.w_group_size:
                raise QuantError(
                    f"{self.layer_name}: group size {r.w_group_size} does not divide its "
                    f"{in_f} input channels; pick a divisor or per-channel granularity"
                )
            rows, groups = out_f, in_f // r.w_group_size
        n = out_f * in_f
        self.register_buffer("w_packed", torch.zeros(packing.packed_nbytes(n, r.w_bits), dtype=torch.uint8))
        self.register_buffer("w_scale", torch.ones(rows, groups, 1, dtype=torch.float16))
        if not r.w_symmetric:
            self.register_buffer("w_zero", torch.zeros(rows, groups, 1, dtype=torch.uint8))
        if residual_meta is not None:
            self._set_residual_buffers(
                residual_meta,
                torch.zeros(residual_meta["packed_nbytes"], dtype=torch.uint8),
                torch.zeros(residual_meta["index_nbytes"], dtype=torch.uint8),
                torch.ones(rows, groups, 1, dtype=torch.float16),
            )

    def _set_residual_buffers(
        self, meta: dict, packed: torch.Tensor, index: torch.Tensor, scale: torch.Tensor
    ) -> None:
        self.residual_meta = dict(meta)
        self.register_buffer("r_packed", packed)
        self.register_buffer("r_index", index)
        self.register_buffer("r_scale", scale)

    def _quantize_weight(self, weight: torch.Tensor, smooth: torch.Tensor | None = None) -> None:
        r = self.recipe
        w2d = weight.detach().float().reshape(self._w2d_shape)
        if not torch.isfinite(w2d).all():
            raise QuantError(f"{self.layer_name}: weight contains NaN or inf")
        if self.smooth is not None:
            if smooth is None:
                raise QuantError(f"{self.layer_name}: smoothing enabled but no factors were given")
            self.smooth.copy_(smooth)
            w2d = w2d * smooth.reshape(1, -1)
        if self.lr_up is not None:
            u, sv, vh = torch.linalg.svd(w2d, full_matrices=False)
            rank = self.lr_up.shape[1]
            self.lr_up.copy_((u[:, :rank] * sv[:rank]).half())
            self.lr_down.copy_(vh[:rank].half())
            w2d = w2d - self.lr_up.float() @ self.lr_down.float()
        self._cache = None
        self._int8_cache = None
        if r.w_bits is None:
            self.weight_fp.copy_(w2d)
            return
        g = group_view(w2d, r.w_granularity, r.w_group_size, self.layer_name)
        scale, zero = choose_qparams(g, r.w_bits, r.w_symmetric, r.w_scale_method, **self._qopts)
        scale16 = _to_fp16_scale(scale)
        qmin, qmax = qrange(r.w_bits, r.w_symmetric)
        codes = torch.clamp(torch.round(g / scale16.float()) + zero, qmin, qmax)
        self.w_packed.copy_(packing.pack((codes - qmin).to(torch.int32), r.w_bits))
        self.w_scale.copy_(scale16)
        if not r.w_symmetric:
            self.w_zero.copy_(zero.to(torch.uint8))
        if r.residual_bits is not None:
            from .methods.rtzs import residual_stage

            main = (codes - zero) * scale16.float()
            meta, packed, index, rscale = residual_stage(
                g, main, scale16.float(), r.residual_bits, r.residual_threshold
            )
            self._set_residual_buffers(meta, packed, index, rscale)

    def weight_codes(self) -> torch.Tensor:
        """Signed/unsigned integer codes in the grouped view ``(rows, groups, k)``."""
        r = self.recipe
        qmin, _ = qrange(r.w_bits, r.w_symmetric)
        n = self._w2d_shape[0] * self._w2d_shape[1]
        codes = packing.unpack(self.w_packed, r.w_bits, n) + qmin
        rows, groups = self.w_scale.shape[:2]
        return codes.view(rows, groups, -1)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight of the quantized matmul (cached), in the smoothed domain and
        without the low-rank branch: main codes plus the residual stage when present."""
        if self.recipe.w_bits is None:
            return self.weight_fp.reshape(self.w_shape)
        if self._cache is None:
            codes = self.weight_codes().float()
            zero = self.w_zero.float() if not self.recipe.w_symmetric else 0.0
            w = (codes - zero) * self.w_scale.float()
            if self.residual_meta is not None and self.residual_meta["nnz"]:
                from .methods.rtzs import decode_residual

                w = w + decode_residual(self.residual_meta, self.r_packed, self.r_index, self.r_scale, w.shape)
            self._cache = w.reshape(self.w_shape)
        return self._cache

    def effective_weight(self) -> torch.Tensor:
        """The weight this layer is equivalent to in the original (unsmoothed) domain: the
        quantized part plus the low-rank branch, divided by the smoothing factors. With FP
        activations the layer computes exactly ``x @ effective_weight().T``."""
        w = self.dequantized_weight().reshape(self._w2d_shape)
        if self.lr_up is not None:
            w = w + self.lr_up.float() @ self.lr_down.float()
        if self.smooth is not None:
            w = w / self.smooth.reshape(1, -1)
        return w.reshape(self.w_shape)

    def drop_cache(self) -> None:
        """Free the float copy of the weight (it is rebuilt from the packed codes on use)."""
        self._cache = None
        self._int8_cache = None

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self._cache = None
        self._int8_cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    def weight_stored_bytes(self) -> int:
        """Packed codes + fp16 scales + uint8 zero points (+ FP weight if kept in FP), plus the
        smoothing vector, low-rank branch and residual stage when present."""
        if self.recipe.w_bits is None:
            b = self.weight_fp.numel() * 4
        else:
            b = self.w_packed.numel() + self.w_scale.numel() * 2
            if not self.recipe.w_symmetric:
                b += self.w_zero.numel()
        if self.smooth is not None:
            b += self.smooth.numel() * 4
        if self.lr_up is not None:
            b += (self.lr_up.numel() + self.lr_down.numel()) * 2
        if self.residual_meta is not None:
            b += self.residual_stored_bytes()
        return b

    def residual_stored_bytes(self) -> int:
        """Residual codes + sparse mask + fp16 residual scales (none when nothing is kept)."""
        if self.residual_meta is None:
            return 0
        b = self.r_packed.numel() + self.r_index.numel()
        if self.residual_meta["nnz"]:
            b += self.r_scale.numel() * 2
        return b


class _QuantBase(QuantWeightMixin, nn.Module):
    layer_name: str

    def _setup_common(self, name: str, recipe: LayerRecipe, qopts: dict, bias: bool, out_f: int) -> None:
        self.layer_name = name
        self.recipe = recipe
        self._qopts = qopts
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_f), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    def _make_act(self, channels: int, n_buckets: int) -> None:
        r = self.recipe
        self.act = None
        if r.a_bits is None:
            return
        if r.act_lzs_group is not None:
            from .methods.rtzs import LZSActQuantizer

            self.act = LZSActQuantizer(
                r.a_bits, r.act_lzs_group, r.a_mode, r.a_granularity, r.a_group_size, channels, n_buckets,
                rounding=r.act_lzs_rounding,
            )
        else:
            self.act = ActQuantizer(
                r.a_bits, r.a_symmetric, r.a_mode, r.a_granularity, r.a_group_size, channels, n_buckets
            )

    def stored_bytes(self) -> int:
        """Everything this layer stores: weight, bias (fp32) and static activation params."""
        b = self.weight_stored_bytes()
        if self.bias is not None:
            b += self.bias.numel() * 4
        if self.act is not None:
            b += self.act.stored_bytes()
        return b

    def fp_bytes(self) -> int:
        """What the same layer occupies in FP32."""
        n = math.prod(self.w_shape) + (self.bias.numel() if self.bias is not None else 0)
        return n * 4


class QuantLinear(_QuantBase):
    """``nn.Linear`` with packed low-bit weights and optional activation quantization."""

    def __init__(
        self,
        name: str,
        in_features: int,
        out_features: int,
        bias: bool,
        recipe: LayerRecipe,
        *,
        n_buckets: int = 1,
        compute: str = "fake",
        qopts: dict | None = None,
        residual_meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.w_shape = (out_features, in_features)
        self._setup_common(name, recipe, qopts or {}, bias, out_features)
        self._init_weight_buffers((out_features, in_features), residual_meta)
        self._make_act(in_features, n_buckets)
        self.compute = compute
        if compute == "int8" and not self.int8_eligible():
            raise QuantError(f"{name}: the int8 compute path needs {self.int8_requirements()}")

    @staticmethod
    def int8_requirements() -> str:
        return (
            "W8 symmetric per-channel or per-tensor weights and A8 activations with one "
            "scale along the input channels (static per-tensor, or dynamic per-sample / "
            "per-token)"
        )

    def int8_eligible(self) -> bool:
        """Whether the recipe keeps every scale constant along the reduction axis."""
        return int8_eligible(self.recipe)

    @classmethod
    def from_linear(
        cls, name: str, linear: nn.Linear, recipe: LayerRecipe, *, n_buckets: int = 1,
        compute: str = "fake", qopts: dict | None = None, smooth: torch.Tensor | None = None,
    ) -> QuantLinear:
        q = cls(name, linear.in_features, linear.out_features, linear.bias is not None, recipe,
                n_buckets=n_buckets, compute=compute, qopts=qopts)
        q._quantize_weight(linear.weight, smooth)
        if linear.bias is not None:
            q.bias.data.copy_(linear.bias.detach().float())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if self.smooth is not None:
            x = x / self.smooth
        if self.act is not None and self.compute == "int8":
            return self._int8_forward(x).to(dtype)
        w = self.dequantized_weight()
        xq = self.act(x) if self.act is not None else x
        y = F.linear(xq.to(w.dtype), w, self.bias)
        if self.lr_up is not None:
            y = y + F.linear(F.linear(x.to(w.dtype), self.lr_down.float()), self.lr_up.float())
        return y.to(dtype)

    def _int8_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._int8_cache is None:
            codes = self.weight_codes().reshape(self.out_features, self.in_features)
            w8t = codes.to(torch.int8).t().contiguous()  # (K, N)
            colsum = codes.sum(dim=1).to(torch.int64)  # (N,)
            scale = self.w_scale.float().reshape(-1)  # (N,) or (1,)
            self._int8_cache = (w8t, colsum, scale)
        return self._int8_cache

    def _int8_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real integer matmul: int8 activations x int8 weights -> int32 accumulators.

        ``y = s_x * s_w * (q_x @ q_w^T - z_x * sum_k q_w)`` + bias, where asymmetric
        activation codes (0..255) are shifted by -128 into int8 together with their zero
        point, which leaves ``q_x - z_x`` unchanged.
        """
        w8t, colsum, w_scale = self._int8_weight()
        codes, s, z = self.act.codes(x)
        shift = 0 if self.act.symmetric else 128
        lead = x.shape[:-1]
        x8 = (codes.reshape(-1, self.in_features) - shift).to(torch.int8)
        acc = torch._int_mm(x8, w8t).to(torch.int64)
        s_rows = torch.broadcast_to(s, (*lead, 1)).reshape(-1, 1)
        if not self.act.symmetric:
            z_rows = torch.broadcast_to(z, (*lead, 1)).reshape(-1, 1).to(torch.int64) - shift
            acc = acc - z_rows * colsum
        y = acc.to(torch.float32) * (s_rows * w_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        r = self.recipe
        w = "FP" if r.w_bits is None else f"W{r.w_bits} {r.w_granularity}"
        return f"{self.in_features}->{self.out_features}, {w}, compute={self.compute}"


class QuantConv2d(_QuantBase):
    """``nn.Conv2d`` with packed weights; the weight is viewed as ``(out, in*kh*kw)``.

    Activations are quantized channels-last (groups run over input channels).
    """

    def __init__(
        self,
        name: str,
        conv_args: dict,
        bias: bool,
        recipe: LayerRecipe,
        *,
        n_buckets: int = 1,
        qopts: dict | None = None,
        residual_meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.conv_args = dict(conv_args)
        ca = self.conv_args
        kh, kw = ca["kernel_size"]
        self.in_channels, self.out_channels = ca["in_channels"], ca["out_channels"]
        in_per_group = self.in_channels // ca["groups"]
        self.w_shape = (self.out_channels, in_per_group, kh, kw)
        if recipe.smooth_alpha is not None or recipe.lowrank_rank:
            raise QuantError(f"{name}: smoothing and low-rank branches are implemented for Linear layers only")
        self._setup_common(name, recipe, qopts or {}, bias, self.out_channels)
        self._init_weight_buffers((self.out_channels, in_per_group * kh * kw), residual_meta)
        self._make_act(self.in_channels, n_buckets)
        self.compute = "fake"

    @staticmethod
    def conv_args_of(conv: nn.Conv2d) -> dict:
        return {
            "in_channels": conv.in_channels, "out_channels": conv.out_channels,
            "kernel_size": tuple(conv.kernel_size), "stride": tuple(conv.stride),
            "padding": conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
            "dilation": tuple(conv.dilation), "groups": conv.groups,
            "padding_mode": conv.padding_mode,
        }

    @classmethod
    def from_conv(
        cls, name: str, conv: nn.Conv2d, recipe: LayerRecipe, *, n_buckets: int = 1,
        qopts: dict | None = None,
    ) -> QuantConv2d:
        if conv.padding_mode != "zeros":
            raise QuantError(f"{name}: Conv2d padding_mode {conv.padding_mode!r} not supported")
        q = cls(name, cls.conv_args_of(conv), conv.bias is not None, recipe,
                n_buckets=n_buckets, qopts=qopts)
        q._quantize_weight(conv.weight)
        if conv.bias is not None:
            q.bias.data.copy_(conv.bias.detach().float())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight()
        if self.act is not None:
            x = self.act(x.movedim(1, -1)).movedim(-1, 1)
        ca = self.conv_args
        y = F.conv2d(x.to(w.dtype), w, self.bias, ca["stride"], ca["padding"], ca["dilation"], ca["groups"])
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        r = self.recipe
        w = "FP" if r.w_bits is None else f"W{r.w_bits} {r.w_granularity}"
        return f"{self.in_channels}->{self.out_channels}, k={self.conv_args['kernel_size']}, {w}"


QUANT_LAYER_TYPES = (QuantLinear, QuantConv2d)


def int8_eligible(r: LayerRecipe) -> bool:
    """Whether a recipe keeps every scale constant along the reduction axis and adds no
    float-side branch, so the layer can run as one int8 x int8 -> int32 matmul."""
    return (
        r.w_bits == 8 and r.w_symmetric and r.w_granularity in ("tensor", "channel")
        and r.a_bits == 8 and r.a_granularity in ("tensor", "token") and r.act_lzs_group is None
        and r.residual_bits is None and not r.lowrank_rank
    )
