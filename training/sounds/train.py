"""Train `tiny-sounds` (text-to-audio DiT) and `tiny-sounds-classifier` from one seed.

    python -m training.sounds.train --seed 0

trains both folders under assets/models/ on a CPU (one thread, deterministic algorithms, fixed
step counts; no wall-clock-dependent decisions). The shipped generator is a fine-tune of the
first tiny-sounds (``--init-from``; the exact two-stage command is in its MODEL_CARD.md): trained
from scratch on the many-phrasing prompts it learned more slowly than the fine-tune. The learning
rate is constant after warm-up, so a snapshot written at step k (``--snapshot-every``) equals a
run with ``--diffusion-steps k``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, PixArtTransformer2DModel

from backend.models.audio_features import N_MELS, waveform_to_logmel
from backend.models.sounds_classifier import SoundsClassifier
from backend.models.tiny_sounds_pipeline import (
    TEXT_DIM,
    TEXT_SCALE,
    TinySoundsPipeline,
    denoise,
    encode_text,
    encode_text_tokens,
    fold,
)
from training.sounds.corpus import KINDS, PREFIXES, Corpus, build_corpus, train_phrasings

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models"
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
}


def seed_everything(seed: int) -> None:
    """One thread + deterministic kernels: the run is a pure function of the seed."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_data(seed: int, train_per_kind: int, held_per_kind: int) -> tuple[Corpus, torch.Tensor]:
    corpus = build_corpus(seed, train_per_kind, held_per_kind)
    mels = torch.from_numpy(waveform_to_logmel(corpus.audio)).unsqueeze(1)
    return corpus, mels


# --------------------------------------------------------------------------- classifier


def train_classifier(
    corpus: Corpus, mels: torch.Tensor, seed: int, epochs: int, log: dict
) -> SoundsClassifier:
    """Adam, batch 64, light input noise so generated (Griffin-Lim) mels are judged fairly."""
    gen = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 1)
    model = SoundsClassifier(labels=list(KINDS))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    train = torch.from_numpy(~corpus.held_out)
    x_tr, y_tr = mels[train], torch.from_numpy(corpus.labels)[train]
    x_te, y_te = mels[~train], torch.from_numpy(corpus.labels)[~train]
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            xb = x_tr[idx] + 0.05 * torch.randn(x_tr[idx].shape, generator=gen)
            loss = F.cross_entropy(model(xb), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x_te).argmax(1) == y_te).float().mean().item()
        print(f"classifier epoch {epoch + 1}/{epochs} loss {loss.item():.4f} held-out acc {acc:.4f}")
    log["classifier"] = {
        "epochs": epochs,
        "held_out_accuracy": acc,
        "n_train": len(x_tr),
        "n_held_out": len(x_te),
        "seconds": round(time.time() - t0, 1),
        "params": sum(p.numel() for p in model.parameters()),
    }
    return model.eval()


# --------------------------------------------------------------------------- generator


def build_transformer(width: int, layers: int, fold_factor: int) -> PixArtTransformer2DModel:
    channels = fold_factor**2
    return PixArtTransformer2DModel(
        num_attention_heads=width // 32,
        attention_head_dim=32,
        in_channels=channels,
        out_channels=channels,
        num_layers=layers,
        cross_attention_dim=width,
        sample_size=N_MELS // fold_factor,
        patch_size=4,
        caption_channels=TEXT_DIM,
        use_additional_conditions=False,
        interpolation_scale=1,
        norm_type="ada_norm_single",
        num_embeds_ada_norm=1000,
    )


def save_generator(transformer: PixArtTransformer2DModel, path: Path, text_tokens: int = 1) -> None:
    scheduler = DPMSolverMultistepScheduler(**SCHEDULE)
    TinySoundsPipeline(transformer=transformer, scheduler=scheduler, text_tokens=text_tokens).save_pretrained(
        str(path), safe_serialization=True
    )


def train_generator(
    corpus: Corpus, mels: torch.Tensor, args: argparse.Namespace, log: dict
) -> PixArtTransformer2DModel:
    """v-prediction DDPM loss, caption dropout (for CFG), embedding noise, EMA weights.

    Each step draws, for every clip, a fresh training prompt of the clip's kind (prefix x
    phrasing), so every clip is seen with all ~108 prompts of its kind rather than one fixed
    string; with probability ``phrase_mix`` the caption is a random convex mix of two prompts of
    the kind (renormalised), which fills the span between phrasings the held-out ones land in.
    """
    torch.manual_seed(args.seed + 2)
    gen = torch.Generator().manual_seed(args.seed + 3)
    train_idx = torch.from_numpy(np.flatnonzero(~corpus.held_out))
    per_kind = [[p + s for s in train_phrasings(k) for p in PREFIXES] for k in KINDS]
    counts = torch.tensor([len(v) for v in per_kind])
    offsets = torch.cumsum(counts, 0) - counts
    flat = [p for v in per_kind for p in v]
    if args.text_tokens == 1:
        table = encode_text(flat) / TEXT_SCALE  # (P, 1, 384) unit norm
    else:  # pooled token + word-piece tokens, padded with pooled copies
        table = encode_text_tokens(flat, args.text_tokens) / TEXT_SCALE
    # slots holding the pooled embedding (slot 0 and the padding): phrase mixing acts on these
    pooled_slot = (table - table[:, :1]).abs().amax(-1) == 0  # (P, L)
    labels = torch.from_numpy(corpus.labels)[train_idx]
    x_all = fold(mels[train_idx], args.fold)

    def draw_prompts(lab: torch.Tensor) -> torch.Tensor:
        pick = (torch.rand(lab.shape, generator=gen) * counts[lab]).long()
        return offsets[lab] + pick

    model = build_transformer(args.width, args.layers, args.fold)
    if args.init_from:  # fine-tune: start from an earlier tiny-sounds transformer (same shape)
        start = PixArtTransformer2DModel.from_pretrained(str(Path(args.init_from) / "transformer"))
        model.load_state_dict(start.state_dict())
    ema = build_transformer(args.width, args.layers, args.fold)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    noise_sched = DDPMScheduler(**SCHEDULE)
    acp = noise_sched.alphas_cumprod
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"transformer params {n_params:,}; prompts {len(table)}; clips {len(train_idx)}")

    t0 = time.time()
    losses: list[float] = []
    for step in range(1, args.diffusion_steps + 1):
        lr = args.lr * min(1.0, step / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(x_all), (args.batch_size,), generator=gen)
        x0 = x_all[idx]
        lab = labels[idx]
        pick = draw_prompts(lab)
        text = table[pick]  # (B, L, 384)
        other = table[draw_prompts(lab), :1]  # the other prompt's pooled token
        lam = torch.rand(args.batch_size, 1, 1, generator=gen)
        mix = (torch.rand(args.batch_size, 1, 1, generator=gen) < args.phrase_mix) & pooled_slot[pick][..., None]
        mixed = F.normalize(lam * text[:, :1] + (1 - lam) * other, dim=-1)
        text = torch.where(mix, mixed, text)
        text = text + args.text_noise / TEXT_DIM**0.5 * torch.randn(text.shape, generator=gen)
        text = F.normalize(text, dim=-1) * TEXT_SCALE
        drop = torch.rand(args.batch_size, generator=gen) < args.caption_dropout
        text = torch.where(drop[:, None, None], torch.zeros_like(text), text)
        t = torch.randint(0, 1000, (args.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - acp[t]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * noise
        target = a * noise - s * x0
        loss = F.mse_loss(denoise(model, xt, t, text), target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        losses.append(loss.item())
        if step % 50 == 0:
            rate = step / (time.time() - t0)
            print(
                f"step {step}/{args.diffusion_steps} loss(avg50) {np.mean(losses[-50:]):.4f} "
                f"{rate:.2f} it/s",
                flush=True,
            )
        if args.snapshot_every and step % args.snapshot_every == 0:
            save_generator(ema, Path(args.snapshot_dir) / f"step_{step}", args.text_tokens)
    log["generator"] = {
        "steps": args.diffusion_steps,
        "batch_size": args.batch_size,
        "params": n_params,
        "seconds": round(time.time() - t0, 1),
        "final_loss_avg100": float(np.mean(losses[-100:])),
        "n_train_prompts": len(table),
    }
    return ema.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-kind", type=int, default=400)
    p.add_argument("--held-out-per-kind", type=int, default=50)
    p.add_argument("--classifier-epochs", type=int, default=6)
    p.add_argument("--diffusion-steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--fold", type=int, default=2)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--text-noise", type=float, default=0.3)
    p.add_argument("--phrase-mix", type=float, default=0.5)
    p.add_argument("--out", type=str, default=str(ASSETS))
    p.add_argument("--snapshot-every", type=int, default=0)
    p.add_argument("--snapshot-dir", type=str, default="/tmp/tiny_sounds_snapshots")
    p.add_argument("--init-from", type=str, default="",
                   help="a tiny-sounds folder whose transformer weights start the run (fine-tuning)")
    p.add_argument("--text-tokens", type=int, default=1,
                   help="caption tokens: 1 = the pooled MiniLM embedding; n > 1 adds n - 1 word-piece tokens")
    p.add_argument("--skip-classifier", action="store_true")
    p.add_argument("--skip-generator", action="store_true")
    args = p.parse_args()

    seed_everything(args.seed)
    out = Path(args.out)
    log: dict = {"args": vars(args)}
    t0 = time.time()
    corpus, mels = make_data(args.seed, args.train_per_kind, args.held_out_per_kind)
    print(f"corpus {corpus.audio.shape} in {time.time() - t0:.1f}s", flush=True)
    if not args.skip_classifier:
        clf = train_classifier(corpus, mels, args.seed, args.classifier_epochs, log)
        clf.save_pretrained(out / "tiny-sounds-classifier")
    if not args.skip_generator:
        ema = train_generator(corpus, mels, args, log)
        save_generator(ema, out / "tiny-sounds", args.text_tokens)
    log["total_seconds"] = round(time.time() - t0, 1)
    Path("/tmp/tiny_sounds_train_log.json").write_text(json.dumps(log, indent=2))
    print(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
