"""Model registry and the model classes qlisten ships (embedded tiny models and their judges)."""

from backend.models.errors import (
    DenoiserNotFoundError,
    ModelError,
    ModelUnavailableError,
    UnknownModelError,
)
from backend.models.registry import (
    Generation,
    ModelEntry,
    PipelineLoader,
    default_model,
    generate,
    get_denoiser,
    get_entry,
    list_models,
    load_pipeline,
    model_names,
    prepare_pipeline,
)

__all__ = [
    "DenoiserNotFoundError",
    "Generation",
    "ModelEntry",
    "ModelError",
    "ModelUnavailableError",
    "PipelineLoader",
    "UnknownModelError",
    "default_model",
    "generate",
    "get_denoiser",
    "get_entry",
    "list_models",
    "load_pipeline",
    "model_names",
    "prepare_pipeline",
]
