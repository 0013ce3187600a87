"""qlisten's post-training quantization library (pure torch: no UI, no I/O but save/load).

    from backend.quant import quantize, QuantConfig, calibrate
    record = calibrate(pipe.transformer, lambda: pipe(prompts, num_inference_steps=25))
    report = quantize(pipe.transformer, QuantConfig(w_bits=4, w_granularity="group",
                      a_bits=8), calibration=record)
"""

from .apply import dequantized_copy, quantizable_layers, quantize, quantized_layers, resolve_recipe
from .calibration import ActivationRecorder, ActStats, CalibrationRecord, calibrate, merge_stats
from .config import ACT_BITS, DEFAULT_SKIP, WEIGHT_BITS, LayerOverride, LayerRecipe, QuantConfig
from .errors import QuantError
from .layers import ActQuantizer, QuantConv2d, QuantLinear
from .report import LayerReport, QuantReport
from .serialization import load_quantized, save_quantized

__all__ = [
    "ACT_BITS", "DEFAULT_SKIP", "WEIGHT_BITS", "ActQuantizer", "ActStats", "ActivationRecorder",
    "CalibrationRecord", "LayerOverride", "LayerRecipe", "LayerReport", "QuantConfig",
    "QuantConv2d", "QuantError", "QuantLinear", "QuantReport", "calibrate", "dequantized_copy",
    "load_quantized", "merge_stats", "quantizable_layers", "quantize", "quantized_layers",
    "resolve_recipe", "save_quantized",
]
