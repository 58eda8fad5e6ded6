"""Fréchet Video Distance (Unterthiner et al. 2018, arXiv 1812.01717): the Fréchet distance between Gaussians
fitted to I3D Kinetics-400 logits of two sets of clips.

Preprocessing: 16-frame clips, every frame bilinearly resized to 224x224 (aspect not kept, no antialiasing, pixel
centres at half-integers as TF2's `tf.image.resize` and cd-fvd; not TF1's `resize_bilinear`, which the original
FVD code calls and which aligns corners differently), values in [-1, 1]. How the 16 frames are taken from a longer
clip is ours (`fvd_frame_indices`): evenly strided from the first frame, as StyleGAN-V's `fvd2048_128f_subsample8f`
takes every 8th of 128 frames, so the 16 frames span the whole clip (for Wan's 81 frames: 0, 5, ..., 75). The
first 16 consecutive frames would cover one second next to the conditioning frame, which generated and real clips
share, and would miss the late drift fine-tuning changes most. (VideoGPT's FVD script differs: it crops a centre
square and scales to [-0.5, 0.5]; its values are not comparable with these.)

FVD is a property of two sets, not of a clip, and it is biased by the number of clips N (the Fréchet distance of
two samples of one distribution is ≈ c/N, not 0); it also reacts weakly to temporal corruption (Ge et al.,
CVPR 2024). So every FVD carries N, and `fvd` warns below `MIN_CLIPS` (see there).

Covariance convention (`COVARIANCES`, config key eval.fvd_covariance): "unbiased" divides by N − 1 as TF-GAN and
the original FVD code do; "biased" divides by N as StyleGAN-V and cd-fvd do (5% apart at N = 16, 0.18% at 400).
Pick the one of the paper you compare against; the run records it with its FVD rows (provenance `evaluators`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cinelora.metrics.i3d import NUM_CLASSES, InceptionI3d

FVD_FRAMES = 16
FVD_SIZE = 224
FEATURE_DIM = NUM_CLASSES
# Below 2048 clips per set (StyleGAN-V's fvd2048_* convention) the 1/N bias is no longer small: in a simulation of
# two samples of one 400-d Gaussian with a power-law (1/k) spectrum, the Fréchet distance came out ≈ 86/N of the
# total variance tr(Σ): 4% at N = 2048, 21% at N = 401, > 100% at N = 16. At N ≤ 400 = FEATURE_DIM the covariances
# are singular (rank ≤ N - 1).
MIN_CLIPS = 2048
COVARIANCES = {"unbiased": 1, "biased": 0}  # name -> numpy's ddof: divide by N - ddof


def fvd_frame_indices(num_frames: int) -> list[int]:
    """The 16 frame indices FVD uses from a clip of `num_frames` frames.

    T ≥ 16: every s-th frame from frame 0 with the integer stride s = (T - 1) // 15, so the apparent frame rate is
    constant (81 frames → 0, 5, ..., 75; 16 or 17 frames → 0..15). T < 16 (smoke clips only): each frame repeated,
    index floor(i·T/16), since I3D needs at least 9 frames; such FVDs are pipeline checks, not the metric.
    """
    if num_frames < 1:
        raise ValueError(f"fvd_frame_indices: a clip needs at least one frame, found {num_frames}")
    if num_frames < FVD_FRAMES:
        return [i * num_frames // FVD_FRAMES for i in range(FVD_FRAMES)]
    stride = (num_frames - 1) // (FVD_FRAMES - 1)
    return [i * stride for i in range(FVD_FRAMES)]


def preprocess_clips(clips: torch.Tensor) -> torch.Tensor:
    """[N, 3, T, H, W] in [-1, 1] → the I3D input [N, 3, 16, 224, 224] in [-1, 1] (frames per `fvd_frame_indices`,
    bilinear resize without antialiasing, half-pixel centres as TF2's `tf.image.resize`, aspect ratio not kept)."""
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected clips [N, 3, T, H, W], found shape {tuple(clips.shape)}")
    n, _, t, h, w = clips.shape
    frames = clips[:, :, fvd_frame_indices(t)].float().transpose(1, 2).reshape(n * FVD_FRAMES, 3, h, w)
    frames = F.interpolate(frames, size=(FVD_SIZE, FVD_SIZE), mode="bilinear", align_corners=False, antialias=False)
    return frames.reshape(n, FVD_FRAMES, 3, FVD_SIZE, FVD_SIZE).transpose(1, 2)


@torch.no_grad()
def i3d_features(model: InceptionI3d, clips: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """FVD features [N, 400] (float32, CPU): I3D logits of clips [N, 3, T, H, W] in [-1, 1], any T, H, W (the
    proxy instrument's I3D has its own number of logits, `model.logits.conv3d.out_channels`).

    Features of one clip do not depend on the others, so features computed clip by clip may be concatenated.
    """
    weight = next(model.parameters())
    features = [model(preprocess_clips(clips[i:i + batch_size]).to(weight.device, weight.dtype)).float().cpu()
                for i in range(0, clips.shape[0], batch_size)]
    return torch.cat(features) if features else torch.empty(0, model.logits.conv3d.out_channels)


def feature_statistics(features: np.ndarray | torch.Tensor,
                       covariance: str = "unbiased") -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (float64, `COVARIANCES` convention) of features [N, D], N ≥ 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_statistics: expected features [N ≥ 2, D], found shape {x.shape}")
    if covariance not in COVARIANCES:
        raise ValueError(f"FVD covariance {covariance!r}: expected one of {list(COVARIANCES)}")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=COVARIANCES[covariance])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix by eigendecomposition; round-off negative eigenvalues become 0."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982; FID's
    Heusel et al. 2017, eq. 6): ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½).

    tr (Σ1 Σ2)^½ = tr (Σ1^½ Σ2 Σ1^½)^½, as the two matrices are similar; the right one is symmetric PSD, so its
    eigenvalues come from `eigvalsh` and are real by construction: no complex `sqrtm`, no imaginary-part check or
    eps-offset retry (TF-GAN's `trace_sqrt_product`, which the FVD reference uses, takes the same route).
    Computed in float64; a result below 0 can only be round-off and is returned as 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrise away round-off asymmetry
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)


@dataclass(frozen=True)
class FVDResult:
    """An FVD value with the clip counts it comes from; `warning` says why it is unreliable (None when N suffices)."""

    value: float
    n_a: int
    n_b: int
    warning: str | None


def sample_size_warning(n_a: int, n_b: int, dim: int = FEATURE_DIM) -> str | None:
    """Why an FVD from `n_a` and `n_b` clips of `dim`-d features is biased, or None at ≥ MIN_CLIPS clips per set."""
    n = min(n_a, n_b)
    compare = "compare it only with FVDs computed from the same numbers of clips, never with published values"
    if n <= dim:
        return (f"FVD from {n_a} vs {n_b} clips: with N ≤ {dim} (the feature dimension) the covariance is "
                f"singular (rank ≤ N - 1) and the value is dominated by sample-size bias; {compare}")
    if n < MIN_CLIPS:
        return (f"FVD from {n_a} vs {n_b} clips: fewer than {MIN_CLIPS} clips per set leaves a 1/N upward bias "
                f"of several percent of the feature variance; {compare}")
    return None


def fvd(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor,
        covariance: str = "unbiased") -> FVDResult:
    """FVD between two sets of I3D features [N_a, 400] and [N_b, 400] (from `i3d_features`), covariances by the
    `covariance` convention; lower is better, 0 for identical sets; unit: squared logits."""
    mu_a, sigma_a = feature_statistics(features_a, covariance)
    mu_b, sigma_b = feature_statistics(features_b, covariance)
    n_a, n_b = len(features_a), len(features_b)
    return FVDResult(frechet_distance(mu_a, sigma_a, mu_b, sigma_b), n_a, n_b,
                     sample_size_warning(n_a, n_b, len(mu_a)))


__all__ = ["FVD_FRAMES", "FVD_SIZE", "FEATURE_DIM", "MIN_CLIPS", "COVARIANCES", "FVDResult", "fvd_frame_indices",
           "preprocess_clips", "i3d_features", "feature_statistics", "frechet_distance", "sample_size_warning", "fvd"]
