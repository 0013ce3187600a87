"""Measure `tiny-digits` and its judge: the quality figures of the MODEL_CARDs.

    python -m training.digits.evaluate [--guidance 1.5] [--steps 25]

Prints the classifier's accuracy on the held-out real split, the generated accuracy (16
samples per digit, judged by the classifier), per-digit accuracy and the wall time for one
batch of 16, and writes a PNG grid (one row per digit) to /tmp/digits_grid.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DiTPipeline
from PIL import Image

from backend.models.digits_classifier import DigitsClassifier
from training.digits.data import NUM_CLASSES, load_split

GENERATOR_DIR = Path("assets/models/tiny-digits")
CLASSIFIER_DIR = Path("assets/models/tiny-digits-classifier")


@torch.no_grad()
def generate(pipe: DiTPipeline, digit: int, n: int, steps: int, guidance: float, seed: int) -> torch.Tensor:
    """n images of one digit as (n, 1, H, W) in [-1, 1] (the pipeline returns [0, 1])."""
    labels = pipe.get_label_ids([str(digit)] * n)
    gen = torch.Generator().manual_seed(seed)
    out = pipe(class_labels=labels, guidance_scale=guidance, generator=gen,
               num_inference_steps=steps, output_type="pt").images
    return out * 2.0 - 1.0


def save_grid(rows: list[torch.Tensor], path: Path, scale: int = 4) -> None:
    """Write one row per digit, images in [-1, 1], upscaled by `scale` (nearest) for viewing."""
    padded = [torch.nn.functional.pad(r[:, 0], (1, 1, 1, 1), value=0.0) for r in rows]
    tiles = [torch.cat(list(r), dim=1) for r in padded]  # a mid-grey 1-px frame per image
    grid = ((torch.cat(tiles, dim=0) + 1) / 2).clamp(0, 1).numpy()
    img = Image.fromarray((grid * 255).round().astype(np.uint8), mode="L")
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def evaluate(generator_dir: Path, classifier_dir: Path, steps: int, guidance: float,
             per_digit: int = 16, seed: int = 0, grid: Path | None = None) -> dict:
    """Compute every figure; returns a dict (also what the bench and MODEL_CARDs report)."""
    torch.set_num_threads(1)
    data = load_split()
    clf = DigitsClassifier.from_pretrained(classifier_dir)
    with torch.no_grad():
        real_acc = float((clf(data.test_images).argmax(-1) == data.test_labels).float().mean())
    pipe = DiTPipeline.from_pretrained(generator_dir)
    pipe.set_progress_bar_config(disable=True)
    rows, per = [], {}
    for d in range(NUM_CLASSES):
        imgs = generate(pipe, d, per_digit, steps, guidance, seed + d)
        with torch.no_grad():
            per[str(d)] = float((clf(imgs).argmax(-1) == d).float().mean())
        rows.append(imgs)
    t0 = time.perf_counter()
    generate(pipe, 0, 16, steps, guidance, seed)
    batch_seconds = time.perf_counter() - t0
    if grid is not None:
        save_grid(rows, grid)
    return {
        "classifier_heldout_accuracy": real_acc,
        "heldout_count": len(data.test_labels),
        "generated_accuracy": float(np.mean(list(per.values()))),
        "per_digit_accuracy": per,
        "samples_per_digit": per_digit,
        "steps": steps,
        "guidance_scale": guidance,
        "batch16_seconds": round(batch_seconds, 3),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator-dir", type=Path, default=GENERATOR_DIR)
    parser.add_argument("--classifier-dir", type=Path, default=CLASSIFIER_DIR)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=Path, default=Path("/tmp/digits_grid.png"))
    args = parser.parse_args()
    res = evaluate(args.generator_dir, args.classifier_dir, args.steps, args.guidance,
                   seed=args.seed, grid=args.grid)
    print(f"classifier held-out accuracy: {res['classifier_heldout_accuracy']:.4f} "
          f"({res['heldout_count']} real test images)")
    print(f"generated accuracy: {res['generated_accuracy']:.4f} "
          f"({res['samples_per_digit']} per digit, {res['steps']} steps, "
          f"guidance {res['guidance_scale']})")
    print("per digit: " + ", ".join(f"{k}: {v:.2f}" for k, v in res["per_digit_accuracy"].items()))
    print(f"time for a batch of 16: {res['batch16_seconds']:.3f} s "
          f"({res['torch_threads']} thread)")
    print(f"grid: {args.grid}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
