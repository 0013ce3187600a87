"""qlisten metrics: FD (FAD/FID), KID, CLAP score and paired FP-vs-quantized scores.

Public API; see each module's docstring for the why of its choices. Typical use::

    from backend.metrics import ClassifierImageEmbedding, compare_outputs
    backend = ClassifierImageEmbedding.from_pretrained()      # assets/models/tiny-digits-classifier
    result = compare_outputs(fp_images, q_images, real_images, backend)   # cached reference
    result.to_dict()                                           # JSON for the app

Modules: `frechet` (FD, Gaussian stats, bootstrap CI, FD-inf), `kid`, `embeddings`
(classifier backends), `clap` (transformers CLAP + CLAP score), `paired` (SNR/LSD/MCD,
PSNR/SSIM), `reference` (content-hashed cache), `compare`, `validate`, `errors`.
"""

from backend.metrics.clap import CLAP_HUB_IDS, ClapEmbedding, ClapScore, clap_score
from backend.metrics.compare import ComparisonResult, compare_outputs
from backend.metrics.embeddings import (
    ClassifierAudioEmbedding,
    ClassifierImageEmbedding,
    EmbeddingBackend,
    hash_items,
    state_dict_hash,
)
from backend.metrics.errors import MetricError
from backend.metrics.frechet import (
    FDInfResult,
    FDResult,
    GaussianStats,
    fit_gaussian,
    frechet_distance,
    frechet_distance_from_embeddings,
    frechet_distance_inf,
    frechet_distance_with_ci,
)
from backend.metrics.kid import KIDResult, kernel_inception_distance, mmd2_unbiased, rms_scale
from backend.metrics.paired import (
    log_spectral_distance,
    mel_cepstral_distortion,
    paired_audio_scores,
    paired_image_scores,
    psnr,
    snr_db,
    ssim,
)
from backend.metrics.reference import ReferenceCache, ReferenceEmbeddings, default_cache_dir
from backend.metrics.validate import check_audio, images_to_unit

__all__ = [
    "CLAP_HUB_IDS",
    "ClapEmbedding",
    "ClapScore",
    "ClassifierAudioEmbedding",
    "ClassifierImageEmbedding",
    "ComparisonResult",
    "EmbeddingBackend",
    "FDInfResult",
    "FDResult",
    "GaussianStats",
    "KIDResult",
    "MetricError",
    "ReferenceCache",
    "ReferenceEmbeddings",
    "check_audio",
    "clap_score",
    "compare_outputs",
    "default_cache_dir",
    "fit_gaussian",
    "frechet_distance",
    "frechet_distance_from_embeddings",
    "frechet_distance_inf",
    "frechet_distance_with_ci",
    "hash_items",
    "images_to_unit",
    "kernel_inception_distance",
    "log_spectral_distance",
    "mel_cepstral_distortion",
    "mmd2_unbiased",
    "paired_audio_scores",
    "paired_image_scores",
    "psnr",
    "rms_scale",
    "snr_db",
    "ssim",
    "state_dict_hash",
]
