"""Save and load quantized denoisers as one safetensors file.

The file holds the module's state dict (packed uint8 codes, fp16 scales, uint8 zero points,
static activation ranges, every FP parameter) and, in its metadata, the layer specs needed
to rebuild the wrappers and — for diffusers models — the model class and config, so a
quantized model can be reloaded without its FP weights.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .apply import _replace, quantized_layers
from .config import LayerRecipe
from .errors import QuantError
from .layers import QuantConv2d, QuantLinear
from .timestep import attach_timestep_tracker

FORMAT = "qlisten-quant/1"
_ALLOWED_MODULE_PREFIXES = ("diffusers.", "backend.", "training.", "tests.")


def _layer_spec(q: QuantLinear | QuantConv2d) -> dict:
    spec = {
        "recipe": dataclasses.asdict(q.recipe),
        "bias": q.bias is not None,
        "n_buckets": int(q.act.scales.shape[0]) if q.act is not None and q.act.mode == "static" else 1,
        "compute": q.compute,
        "residual_meta": q.residual_meta,
    }
    if isinstance(q, QuantLinear):
        spec.update(kind="linear", in_features=q.in_features, out_features=q.out_features)
    else:
        spec.update(kind="conv2d", conv_args=q.conv_args)
    return spec


def save_quantized(module: nn.Module, path: str | Path) -> Path:
    """Write ``module`` (quantized in place by :func:`quantize`) to ``path``."""
    layers = quantized_layers(module)
    if not layers:
        raise QuantError("module has no quantized layer; call quantize() first")
    meta = {
        "format": FORMAT,
        "layers": json.dumps({name: _layer_spec(q) for name, q in layers.items()}),
    }
    if hasattr(module, "config") and hasattr(type(module), "from_config"):
        meta["model_class"] = f"{type(module).__module__}.{type(module).__qualname__}"
        meta["model_config"] = json.dumps(dict(module.config), default=list)
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def load_quantized(path: str | Path, module: nn.Module | None = None) -> nn.Module:
    """Load a file written by :func:`save_quantized`.

    ``module`` is an FP instance of the same architecture (its weights are overwritten); when
    omitted, a diffusers model is rebuilt from the class and config stored in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise QuantError(f"no quantized model at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise QuantError(f"{path} is not a qlisten quantized model (format {meta.get('format')!r})")
        state = {k: f.get_tensor(k) for k in f.keys()}
    specs = json.loads(meta["layers"])
    if module is None:
        module = _rebuild(meta)
    for name, spec in specs.items():
        recipe = LayerRecipe(**{**spec["recipe"], "notes": tuple(spec["recipe"].get("notes", ()))})
        if spec["kind"] == "linear":
            q: QuantLinear | QuantConv2d = QuantLinear(
                name, spec["in_features"], spec["out_features"], spec["bias"], recipe,
                n_buckets=spec["n_buckets"], compute=spec["compute"],
                residual_meta=spec.get("residual_meta"),
            )
        else:
            ca = dict(spec["conv_args"])
            for key in ("kernel_size", "stride", "dilation"):
                ca[key] = tuple(ca[key])
            if not isinstance(ca["padding"], str):
                ca["padding"] = tuple(ca["padding"])
            q = QuantConv2d(name, ca, spec["bias"], recipe, n_buckets=spec["n_buckets"],
                            residual_meta=spec.get("residual_meta"))
        _replace(module, name, q)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("_cache")]:
        raise QuantError(
            f"{path} does not match the module: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    tracker = attach_timestep_tracker(module)
    for q in quantized_layers(module).values():
        if q.act is not None:
            q.act.tracker = tracker
    return module.eval()


def _rebuild(meta: dict) -> nn.Module:
    cls_path = meta.get("model_class")
    if not cls_path:
        raise QuantError("the file stores no model class: pass an FP module of the same architecture")
    if not cls_path.startswith(_ALLOWED_MODULE_PREFIXES):
        raise QuantError(f"refusing to import model class {cls_path!r} from a file")
    mod_name, _, cls_name = cls_path.rpartition(".")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    with torch.device("cpu"):
        return cls.from_config(json.loads(meta["model_config"]))
