"""The model registry: name -> how to load a diffusers pipeline, its denoiser, its defaults.

Why a registry: every other layer (runner, metrics, UI) asks "which models are there, what
kind of output do they make, which module do I quantize, how do I generate with fixed seeds"
and must get the same answer. Adding a model means adding one ``ModelEntry`` here (plus a
tiny-random test of its loading code in tests/test_registry.py), nothing else.

Embedded models (``tiny-sounds``, ``tiny-digits``) load from ``assets/models/<name>`` in the
repository and are the defaults, because they work on a fresh machine with no network.

Hub models load through diffusers. The download rule (cheap, never blocks offline):

1. Always try the local Hugging Face cache first (``local_files_only=True``): no network.
2. If that misses, download only when allowed:

   - ``load_pipeline(..., local_files_only=True)``: never;
   - ``load_pipeline(..., local_files_only=False)``: yes, the caller asked explicitly;
   - ``local_files_only=None`` (the default): only if ``QLISTEN_ALLOW_DOWNLOADS=1`` is set.

   ``HF_HUB_OFFLINE=1`` always wins and forbids downloads. Downloads are opt-in because the
   development and CI machines have no route to the hub, and a blind attempt would cost
   connection retries and end in a traceback.
3. A refused or failed download raises :class:`ModelUnavailableError` with a one-line reason
   (gated models name ``HF_TOKEN``), never a raw traceback from the hub client.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from backend.models.errors import (
    DenoiserNotFoundError,
    ModelUnavailableError,
    UnknownModelError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ALLOW_DOWNLOADS_ENV = "QLISTEN_ALLOW_DOWNLOADS"

Kind = Literal["audio", "image"]
Conditioning = Literal["text", "class"]


@dataclass(frozen=True)
class PipelineLoader:
    """How to build the pipeline: a class (dotted path, imported lazily) and where from.

    The class is a dotted string so that listing models imports nothing heavy, and so that
    the embedded ``TinySoundsPipeline`` (and its sentence encoder) loads only when chosen.
    """

    pipeline_class: str  # e.g. "diffusers.DiTPipeline"
    source: str  # repo-relative asset folder (embedded) or hub repo id
    embedded: bool  # True: `source` is a folder under the repository root

    def resolve_class(self) -> type:
        module_name, _, attr = self.pipeline_class.rpartition(".")
        return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class ModelEntry:
    """One model the app can pick. Immutable: entries are shared module-level constants."""

    name: str
    title: str
    kind: Kind
    conditioning: Conditioning  # text prompts or class labels
    loader: PipelineLoader
    denoiser_attr: str  # pipeline attribute holding the module to quantize
    default_inputs: tuple[str, ...]  # prompts (text) or class names (class)
    default_steps: int
    default_guidance: float
    licence: str
    sample_rate: int | None = None  # audio: Hz of the returned waveform
    image_size: int | None = None  # image: native square size in pixels
    audio_length_s: float | None = None  # audio: clip length asked of the pipeline (None: its own)
    needs_network: bool = False  # weights come from the hub (True for every hub entry)
    gated: bool = False  # the hub repo needs an accepted licence and a token (HF_TOKEN)
    requires: tuple[str, ...] = ()  # extra importable modules its stored pipeline needs
    description: str = ""

    @property
    def embedded(self) -> bool:
        return self.loader.embedded

    @property
    def asset_path(self) -> Path | None:
        """Absolute folder of an embedded model; None for hub models."""
        return REPO_ROOT / self.loader.source if self.loader.embedded else None


_TINY_SOUNDS_PROMPTS = (
    "a low humming tone",
    "a high beep",
    "a sawtooth buzz",
    "white noise hiss",
    "a plucked string",
    "a drum hit",
    "a rising siren",
    "a ticking clock",
    "a chord",
    "speech-like babble",
)
_AUDIO_HUB_PROMPTS = (
    "A hammer hitting a wooden surface",
    "A dog barking in the distance",
    "Rain falling on a tin roof",
    "A church bell ringing",
)

_ENTRIES: tuple[ModelEntry, ...] = (
    ModelEntry(
        name="tiny-sounds",
        title="tiny-sounds (embedded text-to-audio DiT)",
        kind="audio",
        conditioning="text",
        loader=PipelineLoader(
            "backend.models.tiny_sounds_pipeline.TinySoundsPipeline",
            "assets/models/tiny-sounds",
            embedded=True,
        ),
        denoiser_attr="transformer",
        default_inputs=_TINY_SOUNDS_PROMPTS,
        default_steps=25,
        default_guidance=2.0,
        licence="qlisten's own weights, trained on synthetic numpy audio (same licence as qlisten)",
        sample_rate=16_000,
        description="PixArt-style transformer on 64x64 log-mels, MiniLM text, mel-consistent Griffin-Lim.",
    ),
    ModelEntry(
        name="tiny-digits",
        title="tiny-digits (embedded class-conditional image DiT)",
        kind="image",
        conditioning="class",
        loader=PipelineLoader("diffusers.DiTPipeline", "assets/models/tiny-digits", embedded=True),
        denoiser_attr="transformer",
        default_inputs=tuple(str(d) for d in range(10)),
        default_steps=25,
        default_guidance=4.0,
        licence="qlisten's own weights, trained on scikit-learn's bundled digits (BSD-3-Clause)",
        image_size=16,
        description="DiTTransformer2DModel + stock DiTPipeline, classes '0'..'9'.",
    ),
    ModelEntry(
        name="audioldm-s-full-v2",
        title="AudioLDM small (cvssp/audioldm-s-full-v2)",
        kind="audio",
        conditioning="text",
        loader=PipelineLoader("diffusers.AudioLDMPipeline", "cvssp/audioldm-s-full-v2", False),
        denoiser_attr="unet",
        default_inputs=_AUDIO_HUB_PROMPTS,
        default_steps=25,
        default_guidance=2.5,
        licence="CC-BY-NC-SA-4.0 (non-commercial)",
        sample_rate=16_000,
        audio_length_s=5.0,
        needs_network=True,
        description="Latent diffusion UNet with CLAP text conditioning, HiFi-GAN vocoder.",
    ),
    ModelEntry(
        name="audioldm2",
        title="AudioLDM 2 (cvssp/audioldm2)",
        kind="audio",
        conditioning="text",
        loader=PipelineLoader("diffusers.AudioLDM2Pipeline", "cvssp/audioldm2", False),
        denoiser_attr="unet",
        default_inputs=_AUDIO_HUB_PROMPTS,
        default_steps=50,
        default_guidance=3.5,
        licence="CC-BY-NC-SA-4.0 (non-commercial)",
        sample_rate=16_000,
        audio_length_s=5.0,
        needs_network=True,
        description="UNet conditioned on CLAP + T5 through a GPT-2 'language of audio'.",
    ),
    ModelEntry(
        name="stable-audio-open-1.0",
        title="Stable Audio Open 1.0 (stabilityai/stable-audio-open-1.0)",
        kind="audio",
        conditioning="text",
        loader=PipelineLoader(
            "diffusers.StableAudioPipeline", "stabilityai/stable-audio-open-1.0", False
        ),
        denoiser_attr="transformer",
        default_inputs=_AUDIO_HUB_PROMPTS,
        default_steps=50,
        default_guidance=7.0,
        licence="Stability AI Community License (gated; free below USD 1M revenue)",
        sample_rate=44_100,
        audio_length_s=5.0,
        needs_network=True,
        gated=True,
        # its stored scheduler (CosineDPMSolverMultistepScheduler) samples Brownian noise
        requires=("torchsde",),
        description="A DiT over Oobleck VAE latents, T5 text; stereo 44.1 kHz (mixed to mono).",
    ),
    ModelEntry(
        name="dit-xl-2-256",
        title="DiT-XL/2 256 (facebook/DiT-XL-2-256)",
        kind="image",
        conditioning="class",
        loader=PipelineLoader("diffusers.DiTPipeline", "facebook/DiT-XL-2-256", False),
        denoiser_attr="transformer",
        default_inputs=("golden retriever", "tabby", "goldfish", "volcano"),
        default_steps=25,
        default_guidance=4.0,
        licence="CC-BY-NC-4.0 (non-commercial)",
        image_size=256,
        needs_network=True,
        description="Class-conditional ImageNet DiT, 675 M parameters.",
    ),
    ModelEntry(
        name="pixart-alpha-512",
        title="PixArt-alpha 512 (PixArt-alpha/PixArt-XL-2-512x512)",
        kind="image",
        conditioning="text",
        loader=PipelineLoader(
            "diffusers.PixArtAlphaPipeline", "PixArt-alpha/PixArt-XL-2-512x512", False
        ),
        denoiser_attr="transformer",
        default_inputs=("A small cactus with a happy face in the Sahara desert",),
        default_steps=20,
        default_guidance=4.5,
        licence="CreativeML Open RAIL++-M",
        image_size=512,
        needs_network=True,
        description="Text-to-image DiT with T5-XXL text encoder (about 20 GB download).",
    ),
)

_BY_NAME: dict[str, ModelEntry] = {e.name: e for e in _ENTRIES}
DEFAULT_MODELS: dict[str, str] = {"audio": "tiny-sounds", "image": "tiny-digits"}


# --------------------------------------------------------------------------- lookup


def list_models(kind: Kind | None = None) -> list[ModelEntry]:
    """All entries (embedded defaults first), optionally only one kind."""
    return [e for e in _ENTRIES if kind is None or e.kind == kind]


def model_names() -> list[str]:
    return [e.name for e in _ENTRIES]


def get_entry(name: str) -> ModelEntry:
    """The entry called `name`; an UnknownModelError listing the valid names otherwise."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownModelError(
            f"unknown model {name!r}; valid names: {', '.join(model_names())}"
        ) from None


def default_model(kind: Kind) -> ModelEntry:
    """The embedded model used when nothing is chosen: it works offline."""
    if kind not in DEFAULT_MODELS:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_MODELS)}, got {kind!r}")
    return _BY_NAME[DEFAULT_MODELS[kind]]


# --------------------------------------------------------------------------- loading


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the Hugging Face client is told to stay offline (HF_HUB_OFFLINE)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return False


def downloads_allowed(local_files_only: bool | None) -> bool:
    """The download rule of this module's docstring, in one place."""
    if local_files_only is True or hub_offline():
        return False
    if local_files_only is False:
        return True
    return _truthy(os.environ.get(ALLOW_DOWNLOADS_ENV))


def missing_requirements(entry: ModelEntry) -> list[str]:
    """Modules in ``entry.requires`` that cannot be imported here."""
    return [m for m in entry.requires if importlib.util.find_spec(m) is None]


def _requirements_note(entry: ModelEntry) -> str:
    missing = missing_requirements(entry)
    if not missing:
        return ""
    return (
        f" It also needs the Python package(s) {', '.join(missing)}, not installed here"
        f" (pip install {' '.join(missing)})."
    )


def _offline_message(entry: ModelEntry, reason: str) -> str:
    hub_id = entry.loader.source
    msg = f"{entry.name!r} needs a download from the hub ({hub_id}); {reason}."
    if entry.gated:
        msg += (
            f" It is gated: accept its licence on https://huggingface.co/{hub_id} and set"
            " HF_TOKEN to a token of that account before downloading."
        )
    msg += (
        f" To fetch it, run online with {ALLOW_DOWNLOADS_ENV}=1 (and HF_HUB_OFFLINE unset);"
        f" offline, use an embedded model ({', '.join(DEFAULT_MODELS.values())})."
    )
    return msg + _requirements_note(entry)


def unavailable_reason(entry: ModelEntry) -> str | None:
    """Why ``entry`` cannot be loaded right now (one line for the page), or None if it can.

    Cheap (no model is built): embedded models need their folder; hub models need their
    ``model_index.json`` in the local cache or permission to download (see the module's rule).
    """
    if entry.embedded:
        path = entry.asset_path
        if path is None or not (path / "model_index.json").is_file():
            return f"{entry.name!r}: embedded model folder {path} is missing; rebuild it under training/"
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(entry.loader.source, "model_index.json")
    if isinstance(cached, str):
        missing = missing_requirements(entry)
        return None if not missing else _import_failure(entry, ImportError(", ".join(missing))).args[0]
    if downloads_allowed(None):
        return None
    why = ("this machine is offline (HF_HUB_OFFLINE is set)" if hub_offline()
           else f"this machine is offline (downloads are off: {ALLOW_DOWNLOADS_ENV} is not 1)")
    return _offline_message(entry, why)


def _import_failure(entry: ModelEntry, exc: ImportError) -> ModelUnavailableError:
    note = _requirements_note(entry).strip() or f"Import failed: {exc}"
    return ModelUnavailableError(f"{entry.name!r} is cached but cannot be built here. {note}")


def _load_embedded(entry: ModelEntry, dtype: torch.dtype) -> Any:
    path = entry.asset_path
    assert path is not None
    if not (path / "model_index.json").is_file():
        raise ModelUnavailableError(
            f"{entry.name!r}: embedded model folder {path} is missing or incomplete "
            "(no model_index.json); rebuild it with its script under training/"
        )
    cls = entry.loader.resolve_class()
    return cls.from_pretrained(str(path), dtype=dtype)


def _load_hub(
    entry: ModelEntry,
    dtype: torch.dtype,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike[str] | None,
) -> Any:
    cls = entry.loader.resolve_class()
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        return cls.from_pretrained(entry.loader.source, local_files_only=True, **kwargs)
    except OSError as cache_miss:  # LocalEntryNotFoundError & co: not (fully) cached
        local_error = cache_miss
    except ImportError as exc:  # cached, but a component needs a package missing here
        raise _import_failure(entry, exc) from exc
    if not downloads_allowed(local_files_only):
        if hub_offline():
            why = "this machine is offline (HF_HUB_OFFLINE is set)"
        elif local_files_only is True:
            why = "this machine is offline (local_files_only=True: no downloads)"
        else:
            why = f"this machine is offline (downloads are off: {ALLOW_DOWNLOADS_ENV} is not 1)"
        raise ModelUnavailableError(_offline_message(entry, why)) from local_error
    token = os.environ.get("HF_TOKEN") or None
    try:
        return cls.from_pretrained(entry.loader.source, token=token, **kwargs)
    except ImportError as exc:
        raise _import_failure(entry, exc) from exc
    except Exception as exc:  # network, auth, gated repo: one clear line for the user
        reason = f"the download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        raise ModelUnavailableError(_offline_message(entry, reason)) from exc


def _language_model_that_generates(pipe: Any) -> None:
    """AudioLDM 2 fix: give the pipeline a GPT-2 that has the generation helpers it calls.

    Why: cvssp/audioldm2 stores its language model as a bare ``GPT2Model``; since
    transformers 4.5x only ``GPT2LMHeadModel`` (a GenerationMixin) has
    ``_update_model_kwargs_for_generation``, so the stock pipeline raises AttributeError at
    generation time (diffusers issue #12630). Wrapping the SAME GPT2Model (weights shared,
    LM head tied to the input embedding, no copy) in a GPT2LMHeadModel changes no hidden
    state: the pipeline reads ``hidden_states[-1]``, never the logits.
    """
    lm = getattr(pipe, "language_model", None)
    if lm is None or hasattr(lm, "_update_model_kwargs_for_generation"):
        return
    from transformers import GPT2LMHeadModel, GPT2Model

    if not isinstance(lm, GPT2Model):
        return
    with torch.device("meta"):  # skip allocating and initialising weights we replace anyway
        head = GPT2LMHeadModel(lm.config)
    head.transformer = lm
    head.lm_head.weight = lm.get_input_embeddings().weight
    head.eval()
    pipe.register_modules(language_model=head)


def prepare_pipeline(pipe: Any, entry: ModelEntry) -> Any:
    """Everything the registry does to a freshly built pipeline before use.

    Shared by :func:`load_pipeline` and the tests, which build the same pipeline classes from
    tiny random components: compatibility fixes, then progress bars off (the app reports
    its own progress).
    """
    if entry.loader.pipeline_class.endswith("AudioLDM2Pipeline"):
        _language_model_that_generates(pipe)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Load the pipeline of model `name`, on `device` in `dtype`, progress bars off.

    Raises UnknownModelError for a bad name and ModelUnavailableError when the weights
    are not here and may not (or could not) be downloaded; see the module docstring.
    `cache_dir` overrides the Hugging Face cache folder (tests point it at an empty one).
    """
    entry = get_entry(name)
    if entry.embedded:
        pipe = _load_embedded(entry, dtype)
    else:
        pipe = _load_hub(entry, dtype, local_files_only, cache_dir)
    return prepare_pipeline(pipe, entry).to(device)


def get_denoiser(pipe: Any, entry: ModelEntry) -> nn.Module:
    """The module to quantize (the UNet or transformer), found by the entry's attribute."""
    module = getattr(pipe, entry.denoiser_attr, None)
    if not isinstance(module, nn.Module):
        found = sorted(
            k for k, v in vars(pipe).items() if isinstance(v, nn.Module) and not k.startswith("_")
        )
        raise DenoiserNotFoundError(
            f"{entry.name!r}: pipeline {type(pipe).__name__} has no nn.Module at "
            f"'{entry.denoiser_attr}' (its modules: {', '.join(found) or 'none'})"
        )
    return module


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Generation:
    """Outputs of :func:`generate`, one row per (input, seed) pair, in request order.

    audio: ``data`` is float32 (N, samples) mono at ``sample_rate`` Hz.
    image: ``data`` is uint8 (N, H, W, C); ``sample_rate`` is None.
    """

    kind: Kind
    data: np.ndarray
    sample_rate: int | None
    inputs: tuple[str | int, ...]
    seeds: tuple[int, ...]


def _pair(
    inputs: Sequence[str | int], seeds: Sequence[int]
) -> tuple[list[str | int], list[int]]:
    """Pair inputs with seeds; a single input or a single seed is repeated to match."""
    ins, sds = list(inputs), [int(s) for s in seeds]
    if not ins or not sds:
        raise ValueError("generate needs at least one input and one seed")
    if len(ins) == 1 and len(sds) > 1:
        ins = ins * len(sds)
    elif len(sds) == 1 and len(ins) > 1:
        sds = sds * len(ins)
    if len(ins) != len(sds):
        raise ValueError(
            f"{len(ins)} inputs and {len(sds)} seeds: give equal numbers, or one of either"
        )
    return ins, sds


def _class_ids(pipe: Any, classes: Sequence[str | int]) -> list[int]:
    """Class names (via the pipeline's id2label, e.g. '7' or 'tabby') or ints -> ids."""
    ids: list[int] = []
    for c in classes:
        if isinstance(c, (int, np.integer)):
            ids.append(int(c))
            continue
        labels = getattr(pipe, "labels", None) or {}
        if c in labels:
            ids.append(int(labels[c]))
        elif str(c).lstrip("-").isdigit() and not labels:
            ids.append(int(c))
        elif labels:
            some = ", ".join(list(labels)[:12])
            raise ValueError(f"unknown class {c!r} for this model; known labels include: {some}")
        else:
            raise ValueError(f"class {c!r}: this pipeline has no id2label; give integer ids")
    return ids


def _call_params(pipe: Any) -> set[str]:
    return set(inspect.signature(pipe.__call__).parameters)


def _sample_rate(pipe: Any, entry: ModelEntry) -> int | None:
    """The waveform's rate as the pipeline itself states it, else the entry's."""
    vocoder = getattr(pipe, "vocoder", None)
    if vocoder is not None and getattr(vocoder.config, "sampling_rate", None):
        return int(vocoder.config.sampling_rate)
    vae = getattr(pipe, "vae", None)
    if vae is not None and getattr(vae, "sampling_rate", None):
        return int(vae.sampling_rate)
    rate = getattr(pipe, "sample_rate", None)
    return int(rate) if rate else entry.sample_rate


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _audio_rows(audios: Any) -> np.ndarray:
    a = _to_numpy(audios).astype(np.float32, copy=False)
    if a.ndim == 1:
        a = a[None]
    if a.ndim == 3:  # (N, channels, samples): stereo models are mixed down to mono
        a = a.mean(axis=1)
    return a


def _image_rows(images: Any) -> np.ndarray:
    x = _to_numpy(images)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


@torch.no_grad()
def generate(
    pipe: Any,
    entry: ModelEntry,
    prompts_or_classes: Sequence[str | int],
    seeds: Sequence[int],
    steps: int | None = None,
    guidance: float | None = None,
    *,
    audio_length_s: float | None = None,
    batch_size: int | None = None,
) -> Generation:
    """Generate one output per (input, seed) pair, each from its own CPU torch.Generator.

    Why one generator per seed: the app renders the FP and the quantized model with the same
    seeds and compares them pairwise, so sample i must depend only on (input i, seed i), not
    on the batch around it. Generators live on the CPU so the initial noise is the same on any
    device. `batch_size` splits the work into chunks without changing any sample's noise.
    `steps`/`guidance`/`audio_length_s` default to the entry's values.
    """
    ins, sds = _pair(prompts_or_classes, seeds)
    steps = entry.default_steps if steps is None else int(steps)
    guidance = entry.default_guidance if guidance is None else float(guidance)
    length = entry.audio_length_s if audio_length_s is None else float(audio_length_s)
    params = _call_params(pipe)
    for needed in ("generator", "num_inference_steps"):
        if needed not in params:
            raise TypeError(f"{type(pipe).__name__}.__call__ takes no {needed!r}")

    base: dict[str, Any] = {"num_inference_steps": steps, "output_type": "np"}
    if "guidance_scale" in params:
        base["guidance_scale"] = guidance
    if entry.kind == "audio" and length is not None:
        for key in ("audio_length_in_s", "audio_end_in_s"):
            if key in params:
                base[key] = length
                break
    if "use_resolution_binning" in params:
        base["use_resolution_binning"] = False  # native square size; binning is for odd shapes
    if "clean_caption" in params:
        base["clean_caption"] = False  # its cleaner needs bs4+ftfy: same prompt text everywhere

    step = len(ins) if batch_size is None else max(1, int(batch_size))
    chunks: list[np.ndarray] = []
    for lo in range(0, len(ins), step):
        chunk_in, chunk_seeds = ins[lo : lo + step], sds[lo : lo + step]
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in chunk_seeds]
        kwargs = dict(base, generator=gens)
        if entry.conditioning == "class":
            kwargs["class_labels"] = _class_ids(pipe, chunk_in)
        else:
            kwargs["prompt"] = [str(p) for p in chunk_in]
        out = pipe(**kwargs)
        if entry.kind == "audio":
            chunks.append(_audio_rows(out.audios))
        else:
            chunks.append(_image_rows(out.images))
    data = np.concatenate(chunks, axis=0)
    rate = _sample_rate(pipe, entry) if entry.kind == "audio" else None
    return Generation(entry.kind, data, rate, tuple(ins), tuple(sds))
