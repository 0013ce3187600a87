"""The comparison the app shows: FP vs quantized outputs, against a reference set.

`compare_outputs` returns FD and KID for (FP vs reference), (quantized vs reference) and
(quantized vs FP), the sample counts, paired per-sample scores, the CLAP score when a CLAP
backend and texts are given, and plain-language notes (resampling, silent outputs, FD
skipped for too few samples). Everything in `ComparisonResult.to_dict()` is JSON-ready.

Why these choices: FD at the app's small sample counts is biased and can be ill-posed, so
KID (unbiased) is always computed, FD comes with a bootstrap CI, and FD is skipped -- with
the reason in `notes` -- when a set has fewer samples than embedding dimensions + 1. Silent
FP/quantized outputs are embedded and counted rather than rejected (a quantized model that
outputs silence is a finding, not a crash), but a silent REFERENCE clip is an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from backend.metrics.clap import ClapEmbedding, clap_score
from backend.metrics.embeddings import EmbeddingBackend
from backend.metrics.errors import MetricError
from backend.metrics.frechet import FDResult, check_embeddings, frechet_distance_with_ci
from backend.metrics.kid import KIDResult, kernel_inception_distance, rms_scale
from backend.metrics.paired import paired_audio_scores, paired_image_scores
from backend.metrics.reference import ReferenceCache, ReferenceEmbeddings
from backend.metrics.validate import RESAMPLER, SILENCE_RMS, check_audio

PAIRS = (("fp_vs_ref", "fp", "ref"), ("q_vs_ref", "q", "ref"), ("q_vs_fp", "q", "fp"))


@dataclass
class ComparisonResult:
    """All scores of one FP-vs-quantized comparison; `to_dict()` is JSON-serialisable."""

    kind: str
    backend: str
    dim: int
    counts: dict[str, int]
    fd: dict[str, FDResult | None]
    kid: dict[str, KIDResult | None]
    paired: dict[str, Any]
    clap: dict[str, Any] | None
    reference_key: str
    reference_from_cache: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        json.dumps(out)  # fail here, not in the app, if something is not JSON-ready
        return out


def _embed_outputs(
    backend: EmbeddingBackend, items: Any, sample_rate: int | None, label: str, notes: list[str]
) -> np.ndarray:
    if backend.kind == "audio":
        batch = check_audio(items, sample_rate, label, allow_silent=True)
        if batch.silent:
            notes.append(
                f"{len(batch.silent)} of {len(batch.waveforms)} {label} clips are silent "
                f"(RMS < {SILENCE_RMS:.0e}): indices {batch.silent[:20]}"
            )
        notes.extend(batch.notes)
        items = batch.waveforms
    return check_embeddings(
        backend.embed(items, sample_rate, allow_silent=True), f"{label} embeddings"
    )


def compare_outputs(
    fp: Any,
    quantized: Any,
    reference: Any | ReferenceEmbeddings,
    backend: EmbeddingBackend,
    *,
    sample_rate: int | None = None,
    reference_sample_rate: int | None = None,
    texts: list[str] | None = None,
    clap: ClapEmbedding | None = None,
    cache: ReferenceCache | None = None,
    n_boot: int = 100,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    kid_feature_scale: str | None = "reference",
    seed: int = 0,
) -> ComparisonResult:
    """Score FP and quantized outputs against a reference set and each other.

    `fp`/`quantized`: same-length batches of outputs of the same prompts and seeds (audio at
    `sample_rate`, images in the conventions of `validate.images_to_unit`). `reference`: raw
    reference items (embedded through `cache`, default `ReferenceCache()`) at
    `reference_sample_rate` (defaults to `sample_rate`), or precomputed `ReferenceEmbeddings`.
    `kid_feature_scale="reference"` divides all embeddings by the reference set's RMS entry
    before KID (see `kid` module; recorded in each KIDResult); None gives textbook KID.
    """
    notes: list[str] = []
    if backend.kind == "audio" and sample_rate is None:
        raise MetricError("audio comparison needs the outputs' sample_rate")
    ref_rate = reference_sample_rate if reference_sample_rate is not None else sample_rate
    if backend.kind == "audio" and ref_rate != sample_rate:
        notes.append(
            f"reference at {ref_rate} Hz, outputs at {sample_rate} Hz: both resampled to the "
            f"embedding's rate with {RESAMPLER}"
        )
    if not isinstance(reference, ReferenceEmbeddings):
        reference = (cache or ReferenceCache()).get_or_compute(backend, reference, ref_rate)
    emb = {
        "fp": _embed_outputs(backend, fp, sample_rate, "FP", notes),
        "q": _embed_outputs(backend, quantized, sample_rate, "quantized", notes),
        "ref": reference.embeddings,
    }
    counts = {k: int(v.shape[0]) for k, v in emb.items()}
    dim = int(emb["fp"].shape[1])

    fd: dict[str, FDResult | None] = {}
    kid: dict[str, KIDResult | None] = {}
    scale = rms_scale(emb["ref"]) if kid_feature_scale == "reference" else None
    for name, a, b in PAIRS:
        # KID first: it is defined at any n >= 2 and is the fallback when FD is not
        if min(counts[a], counts[b]) < 2:
            kid[name] = None
            fd[name] = None
            notes.append(f"KID and FD {name} skipped: {min(counts[a], counts[b])} sample(s); both need >= 2")
            continue
        kid[name] = kernel_inception_distance(
            emb[a], emb[b], num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed,
            feature_scale=scale,
        )
        if min(counts[a], counts[b]) < dim + 1:
            fd[name] = None
            notes.append(
                f"FD {name} skipped: {min(counts[a], counts[b])} samples for a {dim}-d "
                f"embedding cannot give a full-rank covariance (needs {dim + 1}); use KID"
            )
        else:
            fd[name] = frechet_distance_with_ci(emb[a], emb[b], n_boot=n_boot, seed=seed)
    if any(v is not None for v in fd.values()):
        notes.append(
            "FD is biased upward at small sample counts: compare values only at equal counts"
        )

    if backend.kind == "audio":
        paired = paired_audio_scores(fp, quantized, sample_rate)
    else:
        paired = paired_image_scores(fp, quantized)
    notes.extend(paired.pop("notes"))

    clap_result = None
    if clap is not None and texts is not None and backend.kind == "audio":
        clap_result = {
            "fp": clap_score(fp, texts, clap, sample_rate).to_dict(),
            "quantized": clap_score(quantized, texts, clap, sample_rate).to_dict(),
            "backend": clap.name,
        }
    return ComparisonResult(
        kind=backend.kind,
        backend=backend.name,
        dim=dim,
        counts=counts,
        fd=fd,
        kid=kid,
        paired=paired,
        clap=clap_result,
        reference_key=reference.key,
        reference_from_cache=reference.from_cache,
        notes=notes,
    )
