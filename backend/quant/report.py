"""What quantization did to each layer and to the whole denoiser, in bytes and error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerReport:
    """One wrapped layer: its recipe, stored vs FP32 bytes and weight reconstruction error."""

    name: str
    kind: str
    shape: tuple[int, ...]
    w_bits: int | None
    a_bits: int | None
    w_granularity: str
    w_group_size: int | None
    a_mode: str | None
    a_granularity: str | None
    compute: str
    stored_bytes: int
    fp_bytes: int
    weight_rel_error: float
    weight_mse: float
    notes: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.stored_bytes / self.fp_bytes


@dataclass
class QuantReport:
    """Per-layer records plus totals for the whole denoiser.

    ``kept_fp`` lists every quantizable layer left in FP and why (skip list, override), so
    no FP fallback is silent. ``model_stored_bytes`` counts quantized layers as stored plus
    every other parameter at FP32; ``model_fp_bytes`` is the whole denoiser at FP32.
    """

    config: dict[str, Any]
    layers: list[LayerReport] = field(default_factory=list)
    kept_fp: list[tuple[str, str]] = field(default_factory=list)
    model_stored_bytes: int = 0
    model_fp_bytes: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def quantized_stored_bytes(self) -> int:
        return sum(layer.stored_bytes for layer in self.layers)

    @property
    def quantized_fp_bytes(self) -> int:
        return sum(layer.fp_bytes for layer in self.layers)

    @property
    def residual_sparsity(self) -> float | None:
        """Fraction of residuals truncated to zero over all RT/ZS layers (``None``: no RT)."""
        res = [rec.extras["residual"] for rec in self.layers if rec.extras.get("residual")]
        total = sum(r["numel"] for r in res)
        return None if total == 0 else 1.0 - sum(r["kept"] for r in res) / total

    @property
    def compression(self) -> float:
        """Stored size of the whole denoiser as a fraction of its FP32 size."""
        return self.model_stored_bytes / max(self.model_fp_bytes, 1)

    def layer(self, name: str) -> LayerReport:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "layers": [asdict(rec) for rec in self.layers],
            "kept_fp": [list(k) for k in self.kept_fp],
            "quantized_stored_bytes": self.quantized_stored_bytes,
            "quantized_fp_bytes": self.quantized_fp_bytes,
            "model_stored_bytes": self.model_stored_bytes,
            "model_fp_bytes": self.model_fp_bytes,
            "compression": self.compression,
            "residual_sparsity": self.residual_sparsity,
            "extras": self.extras,
        }

    def to_markdown(self, max_rows: int = 50) -> str:
        """A human-readable table (the first ``max_rows`` layers) and totals."""
        lines = [
            "| layer | W | A | stored KB | FP32 KB | ratio | rel. weight error |",
            "|---|---|---|---|---|---|---|",
        ]
        for rec in self.layers[:max_rows]:
            w = "FP" if rec.w_bits is None else f"{rec.w_bits} ({rec.w_granularity})"
            a = "FP" if rec.a_bits is None else f"{rec.a_bits} ({rec.a_mode})"
            lines.append(
                f"| {rec.name} | {w} | {a} | {rec.stored_bytes / 1024:.1f} | "
                f"{rec.fp_bytes / 1024:.1f} | {rec.ratio:.3f} | {rec.weight_rel_error:.4f} |"
            )
        lines.append("")
        lines.append(
            f"Denoiser: {self.model_stored_bytes / 2**20:.3f} MB stored vs "
            f"{self.model_fp_bytes / 2**20:.3f} MB FP32 ({self.compression:.3f}x); "
            f"{len(self.layers)} layers quantized, {len(self.kept_fp)} kept in FP."
        )
        return "\n".join(lines)
