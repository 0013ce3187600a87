"""Measure `tiny-sounds` and its judge against issue 3's quality bars.

    python -m training.sounds.evaluate [--guidance 4.0] [--per-kind 16]

Reports: the classifier's accuracy on held-out REAL clips; the share of generated clips (25
sampler steps, prompts from HELD-OUT phrasings only) classified as the requested kind, per kind
and overall; seconds per single clip (Griffin-Lim included); an unseen-phrasing check.
Writes /tmp/sounds_mels.png (a grid of generated log-mels), /tmp/sounds_<kind>.wav and
/tmp/sounds_eval.json, and prints librosa statistics (RMS, spectral centroid, median pitch) of
generated vs real clips per kind, so one can "listen" with numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from backend.models.audio_features import SAMPLE_RATE, waveform_to_logmel
from backend.models.sounds_classifier import SoundsClassifier
from backend.models.tiny_sounds_pipeline import TinySoundsPipeline
from training.sounds.corpus import KINDS, PREFIXES, build_corpus, held_out_phrasings

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models"


def clip_stats(audio: np.ndarray) -> dict[str, float]:
    """Mean RMS, mean spectral centroid (Hz) and median YIN pitch (Hz) over a set of clips."""
    rms = [float(np.sqrt(np.mean(a**2))) for a in audio]
    cent = [float(np.mean(librosa.feature.spectral_centroid(y=a, sr=SAMPLE_RATE))) for a in audio]
    pitch = [
        float(np.median(librosa.yin(a, fmin=40, fmax=2000, sr=SAMPLE_RATE, frame_length=2048)))
        for a in audio
    ]
    return {"rms": float(np.mean(rms)), "centroid_hz": float(np.mean(cent)),
            "pitch_hz": float(np.median(pitch))}


def classify(clf: SoundsClassifier, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return clf(clf.preprocess(audio, SAMPLE_RATE)).argmax(1).numpy()


def save_grid(mels: dict[str, np.ndarray], path: str, per_row: int = 6, scale: int = 2) -> None:
    """PNG grid (rows: kinds, low frequencies at the bottom), grey levels from [-1, 1] mels.

    Drawn with PIL (matplotlib is not a dependency); white = loud (0 dB), black = -80 dB.
    """
    from PIL import Image, ImageDraw

    tile = mels[next(iter(mels))].shape[-1] * scale
    gap, label_w = 2, 60
    rows = len(mels)
    img = Image.new("L", (label_w + per_row * (tile + gap), rows * (tile + gap)), 255)
    draw = ImageDraw.Draw(img)
    for r, (kind, m) in enumerate(mels.items()):
        y = r * (tile + gap)
        draw.text((2, y + tile // 2 - 5), kind, fill=0)
        for c in range(min(per_row, len(m))):
            grey = ((np.clip(m[c], -1, 1) + 1) * 127.5).astype(np.uint8)[::-1]  # low f at bottom
            tile_img = Image.fromarray(grey).resize((tile, tile), Image.NEAREST)
            img.paste(tile_img, (label_w + c * (tile + gap), y))
    img.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=str(ASSETS / "tiny-sounds"))
    p.add_argument("--classifier", default=str(ASSETS / "tiny-sounds-classifier"))
    p.add_argument("--per-kind", type=int, default=16)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="", help="suffix for the /tmp output files")
    p.add_argument("--corpus-seed", type=int, default=0)
    p.add_argument("--train-per-kind", type=int, default=400)
    p.add_argument("--held-out-per-kind", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {"args": vars(args)}

    clf = SoundsClassifier.from_pretrained(args.classifier)
    corpus = build_corpus(args.corpus_seed, args.train_per_kind, args.held_out_per_kind)
    held = corpus.held_out
    pred = classify(clf, corpus.audio[held])
    result["classifier_held_out_accuracy"] = float(np.mean(pred == corpus.labels[held]))
    print(f"classifier held-out accuracy: {result['classifier_held_out_accuracy']:.4f}")

    pipe = TinySoundsPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(args.seed)
    per_kind, all_mels, stats = {}, {}, {}
    for label, kind in enumerate(KINDS):
        phr = [pre + s for s in held_out_phrasings(kind) for pre in PREFIXES]
        prompts = [phr[i % len(phr)] for i in range(args.per_kind)]
        out = pipe(prompts, num_inference_steps=args.steps, guidance_scale=args.guidance,
                   generator=gen)
        got = classify(clf, out.audios)
        per_kind[kind] = float(np.mean(got == label))
        all_mels[kind] = out.mels
        sf.write(f"/tmp/sounds_{kind}{args.tag}.wav", out.audios[0], SAMPLE_RATE)
        real = corpus.audio[held & (corpus.labels == label)][: args.per_kind]
        stats[kind] = {"generated": clip_stats(out.audios), "real": clip_stats(real)}
        confused = {KINDS[k]: int(np.sum(got == k)) for k in set(got.tolist()) if k != label}
        print(f"{kind:7s} acc {per_kind[kind]:.3f} confused-with {confused} "
              f"gen {stats[kind]['generated']} real {stats[kind]['real']}", flush=True)
    result["generated_accuracy_per_kind"] = per_kind
    result["generated_accuracy"] = float(np.mean(list(per_kind.values())))
    result["librosa_stats"] = stats
    print(f"generated accuracy overall: {result['generated_accuracy']:.4f}")

    save_grid(all_mels, f"/tmp/sounds_mels{args.tag}.png")

    unseen = "a deep humming tone"
    out = pipe([unseen] * 8, num_inference_steps=args.steps, guidance_scale=args.guidance,
               generator=torch.Generator().manual_seed(args.seed + 1))
    got = classify(clf, out.audios)
    result["unseen_phrase"] = {"prompt": unseen, "classified": [KINDS[k] for k in got]}
    print(f"unseen '{unseen}': {result['unseen_phrase']['classified']}")

    pipe("a high beep", num_inference_steps=args.steps, guidance_scale=args.guidance)  # warm
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        pipe(KINDS[i], num_inference_steps=args.steps, guidance_scale=args.guidance,
             generator=torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - t0)
    result["seconds_per_clip"] = float(np.median(times))
    result["seconds_per_clip_threads"] = args.threads
    print(f"seconds per clip ({args.threads} thread(s), GL included): "
          f"{result['seconds_per_clip']:.2f}")
    real_mel = waveform_to_logmel(corpus.audio[held][:4])
    result["real_mel_range"] = [float(real_mel.min()), float(real_mel.max())]
    Path(f"/tmp/sounds_eval{args.tag}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
