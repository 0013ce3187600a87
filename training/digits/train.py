"""Train `tiny-digits-classifier`, then the tiny VAE and the class-conditional DiT of `tiny-digits`.

One command reproduces both shipped folders bit-for-bit (single CPU thread, deterministic
algorithms, every random draw from generators seeded from --seed):

    python -m training.digits.train --seed 0

Why a VAE: the stock `diffusers.DiTPipeline` always decodes latents with `vae.decode`, so the
DiT lives in the latent space of a tiny `AutoencoderKL` (1 -> 4 channels, one downsample:
16x16 pixels -> 8x8 latents) trained first on the training split. The latent mean is folded
into the VAE's quant/post-quant conv biases and `scaling_factor` is set to 1/std, so the
pipeline's `latents / scaling_factor` hands the decoder exactly what it was trained on.

Why `num_embeds_ada_norm = 1000`: DiTPipeline hard-codes the null (unconditional) label as
1000, so the label table must have 1001 rows; digits use ids 0..9 and id 1000 is the null
class that label dropout trains for classifier-free guidance. Rows 10..999 stay unused.
Each stage seeds itself, so `--stages dit` alone gives the same DiT as the full run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

from backend.models.digits_classifier import DigitsClassifier
from training.digits.data import NUM_CLASSES, DigitsSplit, load_split

GENERATOR_DIR = Path("assets/models/tiny-digits")
CLASSIFIER_DIR = Path("assets/models/tiny-digits-classifier")
NULL_LABEL = 1000  # DiTPipeline's hard-coded unconditional class id
LABEL_DROPOUT = 0.1


def make_deterministic(seed: int) -> None:
    """One thread + deterministic kernels: the condition for bit-for-bit reruns on CPU."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


def shift_augment(images: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each image by up to +-max_shift pixels (edge value -1 fills the border)."""
    b, _, h, w = images.shape
    pad = F.pad(images, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    out = torch.empty_like(images)
    for i in range(b):
        out[i] = pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


@torch.no_grad()
def classifier_accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose arg-max class equals the label."""
    model.eval()
    return float((model(images).argmax(-1) == labels).float().mean())


def train_classifier(data: DigitsSplit, seed: int, epochs: int = 40) -> tuple[DigitsClassifier, dict]:
    """Train the judge on the REAL training split (shift + noise augmentation for robustness)."""
    make_deterministic(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    n, batch = len(data.train_labels), 64
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for k in range(0, n, batch):
            idx = perm[k : k + batch]
            x = shift_augment(data.train_images[idx], gen)
            x = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
            loss = F.cross_entropy(model(x), data.train_labels[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    acc = classifier_accuracy(model, data.test_images, data.test_labels)
    stats = {"epochs": epochs, "steps": steps, "train_seconds": round(time.time() - t0, 1),
             "heldout_accuracy": acc, "seed": seed}
    print(f"classifier: held-out accuracy {acc:.4f} ({stats['train_seconds']} s)", flush=True)
    return model.eval(), stats


def build_vae() -> AutoencoderKL:
    """A tiny AutoencoderKL: 1 channel in/out, 4 latent channels, one 2x downsample, no attention."""
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=16,
        mid_block_add_attention=False,
    )


def train_vae(
    data: DigitsSplit, seed: int, steps: int, kl_weight: float = 1e-3
) -> tuple[AutoencoderKL, dict]:
    """Train the VAE on the training split, then centre and scale its latent space."""
    make_deterministic(seed + 2)
    gen = torch.Generator().manual_seed(seed + 2)
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    x_all, n, batch = data.train_images, len(data.train_labels), 64
    t0 = time.time()
    vae.train()
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss_rec = F.mse_loss(rec, x)
        loss_kl = post.kl().mean() / z[0].numel()
        loss = loss_rec + kl_weight * loss_kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"vae step {step} rec {loss_rec.item():.5f} kl {loss_kl.item():.3f}", flush=True)
    vae.eval()
    centre_latents(vae, x_all)
    with torch.no_grad():
        z = vae.encode(data.test_images).latent_dist.mean
        rec = vae.decode(z).sample
        test_mse = float(F.mse_loss(rec, data.test_images))
    stats = {"steps": steps, "train_seconds": round(time.time() - t0, 1), "kl_weight": kl_weight,
             "heldout_recon_mse": test_mse, "scaling_factor": vae.config.scaling_factor}
    print(f"vae: held-out recon mse {test_mse:.5f}, scaling {vae.config.scaling_factor:.4f}", flush=True)
    return vae, stats


@torch.no_grad()
def centre_latents(vae: AutoencoderKL, images: torch.Tensor) -> None:
    """Fold the per-channel latent mean into the conv biases and set scaling_factor = 1/std.

    encode: mean' = mean - m (quant_conv bias of the mean half); decode: post_quant_conv(z' + m)
    = W z' + (b + W m). The decoder's output for any latent is unchanged; latents become
    zero-mean, and DiTPipeline's `latents / scaling_factor` restores their unit-variance scale.
    """
    mean = vae.encode(images).latent_dist.mean
    m = mean.mean(dim=(0, 2, 3))
    c = m.numel()
    vae.quant_conv.bias[:c] -= m
    w = vae.post_quant_conv.weight[:, :, 0, 0]
    vae.post_quant_conv.bias += w @ m
    std = float(vae.encode(images).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / std)


def build_transformer(hidden: int = 128, layers: int = 6, heads: int = 4) -> DiTTransformer2DModel:
    """The DiT: 8x8x4 latents, patch 2 (16 tokens), width `hidden` (a multiple of 64)."""
    model = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=hidden // heads,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
    )
    # DiT's adaLN-Zero init: gates and output projection start at zero (blocks = identity).
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.norm1.linear.weight.zero_()
            block.norm1.linear.bias.zero_()
            # the blocks' own label dropout draws independently per block; we drop labels
            # once per sample in the training loop instead (see train_dit)
            block.norm1.emb.class_embedder.dropout_prob = 0.0
        model.proj_out_2.weight.zero_()
        model.proj_out_2.bias.zero_()
    return model


def build_scheduler() -> DDIMScheduler:
    """Cosine-schedule DDIM with v-prediction; trailing spacing starts sampling at t=999."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )


def make_pipeline(transformer: DiTTransformer2DModel, vae: AutoencoderKL) -> DiTPipeline:
    """Assemble the stock DiTPipeline with labels "0".."9"."""
    id2label = {i: str(i) for i in range(NUM_CLASSES)}
    return DiTPipeline(transformer=transformer, vae=vae, scheduler=build_scheduler(), id2label=id2label)


def save_generator(transformer: DiTTransformer2DModel, vae: AutoencoderKL, out: Path) -> None:
    """save_pretrained, then add id2label to model_index.json (DiTPipeline's own key)."""
    pipe = make_pipeline(transformer, vae)
    pipe.save_pretrained(out, safe_serialization=True)
    index_path = out / "model_index.json"
    index = json.loads(index_path.read_text())
    index["id2label"] = {str(i): str(i) for i in range(NUM_CLASSES)}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    strip_load_paths(out)


def strip_load_paths(out: Path) -> None:
    """Drop `_name_or_path` (where a component was loaded from) so reruns write identical files."""
    for name in ("transformer", "vae"):
        path = out / name / "config.json"
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_dit(
    data: DigitsSplit, vae: AutoencoderKL, seed: int, steps: int, out: Path, batch: int = 64,
    lr: float = 1e-3, ema_decay: float = 0.9995, save_every: int = 1000, stop_after: int = 0,
) -> tuple[DiTTransformer2DModel, dict]:
    """Train the DiT on centred, scaled VAE latents (v-prediction, label dropout to id 1000).

    The LR schedule always spans `steps`; `stop_after` > 0 ends the run early on that same
    schedule, so a run cut short (e.g. by a deadline) is still reproduced exactly by one command.
    """
    make_deterministic(seed + 3)
    gen = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        latents = vae.encode(data.train_images).latent_dist.mean * vae.config.scaling_factor
    labels = data.train_labels
    model = build_transformer()
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    sched = build_scheduler()
    acp = sched.alphas_cumprod
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    warmup = min(500, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    n = len(labels)
    t0, running = time.time(), 0.0
    model.train()
    run_steps = min(steps, stop_after) if stop_after > 0 else steps
    for step in range(run_steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x0, y = latents[idx], labels[idx].clone()
        drop = torch.rand(batch, generator=gen) < LABEL_DROPOUT
        y[drop] = NULL_LABEL
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - acp[t]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * noise
        target = a * noise - s * x0  # v
        pred = model(xt, timestep=t, class_labels=y).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == run_steps - 1:
            rate = (step + 1) / (time.time() - t0)
            print(f"dit step {step} loss {running:.4f} lr {lr_sched.get_last_lr()[0]:.2e} "
                  f"{rate:.2f} it/s", flush=True)
        if save_every and (step + 1) % save_every == 0 and step + 1 < run_steps:
            save_generator(ema, vae, out)
    stats = {"steps": run_steps, "schedule_steps": steps, "batch": batch, "lr": lr, "ema_decay": ema_decay,
             "train_seconds": round(time.time() - t0, 1),
             "params": sum(p.numel() for p in model.parameters())}
    return ema, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="classifier,vae,dit",
                        help="comma list of classifier, vae, dit (dit needs the saved vae)")
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--dit-steps", type=int, default=10000)
    parser.add_argument("--dit-stop-after", type=int, default=0,
                        help="end the DiT run after this many steps of the --dit-steps schedule")
    parser.add_argument("--generator-dir", type=Path, default=GENERATOR_DIR)
    parser.add_argument("--classifier-dir", type=Path, default=CLASSIFIER_DIR)
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    data = load_split()
    stats_path = Path("/tmp") / "tiny_digits_train_stats.json"
    stats: dict = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    if "classifier" in stages:
        model, stats["classifier"] = train_classifier(data, args.seed)
        model.save_pretrained(args.classifier_dir)
    if "vae" in stages:
        vae, stats["vae"] = train_vae(data, args.seed, args.vae_steps)
        vae.save_pretrained(args.generator_dir / "vae", safe_serialization=True)
    if "dit" in stages:
        vae = AutoencoderKL.from_pretrained(args.generator_dir / "vae").eval()
        ema, stats["dit"] = train_dit(
            data, vae, args.seed, args.dit_steps, args.generator_dir,
            stop_after=args.dit_stop_after,
        )
        save_generator(ema, vae, args.generator_dir)
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
