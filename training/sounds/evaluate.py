"""Measure `tiny-sounds` and its judge against issue 3's quality bars.

    python -m training.sounds.evaluate [--guidance 4.0] [--per-kind 16] [--train-phrasings] [--quick]

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
from training.sounds.corpus import KINDS, PREFIXES, Corpus, build_corpus, held_out_phrasings, train_phrasings

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


def prompts_for(kind: str, per_kind: int, held_out: bool = True) -> list[str]:
    """``per_kind`` prompts of one kind, cycling prefix x phrasing (held-out ones by default)."""
    pick = held_out_phrasings if held_out else train_phrasings
    phr = [pre + s for s in pick(kind) for pre in PREFIXES]
    return [phr[i % len(phr)] for i in range(per_kind)]


def classifier_held_out_accuracy(clf: SoundsClassifier, corpus: Corpus) -> float:
    """The judge's accuracy on the held-out REAL clips of the corpus (never trained on)."""
    held = corpus.held_out
    return float(np.mean(classify(clf, corpus.audio[held]) == corpus.labels[held]))


def generate_and_judge(
    pipe: TinySoundsPipeline,
    clf: SoundsClassifier,
    per_kind: int,
    steps: int,
    guidance: float,
    seed: int,
    held_out: bool = True,
) -> dict:
    """Generate ``per_kind`` clips per kind (one generator stream from ``seed``) and judge them.

    Returns per-kind accuracy, the overall mean, confusions, and the mels/audio per kind (for
    grids and listening statistics).
    """
    gen = torch.Generator().manual_seed(seed)
    acc, confused, mels, audios = {}, {}, {}, {}
    for label, kind in enumerate(KINDS):
        out = pipe(prompts_for(kind, per_kind, held_out), num_inference_steps=steps,
                   guidance_scale=guidance, generator=gen)
        got = classify(clf, out.audios)
        acc[kind] = float(np.mean(got == label))
        confused[kind] = {KINDS[k]: int(np.sum(got == k)) for k in sorted(set(got.tolist())) if k != label}
        mels[kind], audios[kind] = out.mels, out.audios
    return {"per_kind": acc, "overall": float(np.mean(list(acc.values()))), "confused": confused,
            "mels": mels, "audios": audios}


def seconds_per_clip(pipe: TinySoundsPipeline, steps: int, guidance: float, repeats: int = 3) -> float:
    """Median wall time of one clip (sampler + CFG + vocoder), after one warm-up call."""
    pipe("a high beep", num_inference_steps=steps, guidance_scale=guidance)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        pipe(KINDS[i % len(KINDS)], num_inference_steps=steps, guidance_scale=guidance,
             generator=torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


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
    p.add_argument("--train-phrasings", action="store_true",
                   help="prompt with TRAINING phrasings instead (to measure the generalisation gap)")
    p.add_argument("--quick", action="store_true", help="accuracy only: no stats, grid or timing")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {"args": vars(args)}

    clf = SoundsClassifier.from_pretrained(args.classifier)
    corpus = build_corpus(args.corpus_seed, args.train_per_kind, args.held_out_per_kind)
    held = corpus.held_out
    result["classifier_held_out_accuracy"] = classifier_held_out_accuracy(clf, corpus)
    print(f"classifier held-out accuracy: {result['classifier_held_out_accuracy']:.4f}")

    pipe = TinySoundsPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    res = generate_and_judge(pipe, clf, args.per_kind, args.steps, args.guidance, args.seed,
                             held_out=not args.train_phrasings)
    stats = {}
    for label, kind in enumerate(KINDS):
        line = f"{kind:7s} acc {res['per_kind'][kind]:.3f} confused-with {res['confused'][kind]}"
        if not args.quick:
            sf.write(f"/tmp/sounds_{kind}{args.tag}.wav", res["audios"][kind][0], SAMPLE_RATE)
            real = corpus.audio[held & (corpus.labels == label)][: args.per_kind]
            stats[kind] = {"generated": clip_stats(res["audios"][kind]), "real": clip_stats(real)}
            line += f" gen {stats[kind]['generated']} real {stats[kind]['real']}"
        print(line, flush=True)
    result["generated_accuracy_per_kind"] = res["per_kind"]
    result["generated_accuracy"] = res["overall"]
    result["confused"] = res["confused"]
    result["librosa_stats"] = stats
    print(f"generated accuracy overall: {result['generated_accuracy']:.4f}")

    if not args.quick:
        save_grid(res["mels"], f"/tmp/sounds_mels{args.tag}.png")
        unseen = "a deep humming tone"
        out = pipe([unseen] * 8, num_inference_steps=args.steps, guidance_scale=args.guidance,
                   generator=torch.Generator().manual_seed(args.seed + 1))
        got = classify(clf, out.audios)
        result["unseen_phrase"] = {"prompt": unseen, "classified": [KINDS[k] for k in got]}
        print(f"unseen '{unseen}': {result['unseen_phrase']['classified']}")
        result["seconds_per_clip"] = seconds_per_clip(pipe, args.steps, args.guidance)
        result["seconds_per_clip_threads"] = args.threads
        print(f"seconds per clip ({args.threads} thread(s), GL included): "
              f"{result['seconds_per_clip']:.2f}")
        real_mel = waveform_to_logmel(corpus.audio[held][:4])
        result["real_mel_range"] = [float(real_mel.min()), float(real_mel.max())]
    Path(f"/tmp/sounds_eval{args.tag}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
