"""Temporal stability of a clip: frame-to-frame LPIPS, its gap to the real clip, and brightness flicker.

A generated clip is judged against its own ground truth, since real footage moves too: `temporal_stability_gaps`
is the generated clip's mean frame-to-frame LPIPS minus the real clip's (> 0: changes more between frames than the
real clip, jitter; < 0: changes less, a frozen or over-smoothed clip). `flicker` needs no reference.
"""
from __future__ import annotations

import lpips
import torch

from cinelora.metrics.lpips_distance import lpips_per_frame

# ITU-R BT.709 luma weights (HD video), applied to the gamma-encoded values as video luma Y' is
LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)


def temporal_lpips(model: lpips.LPIPS, clip: torch.Tensor) -> torch.Tensor:
    """[T - 1] LPIPS between consecutive frames of a clip [T ≥ 2, 3, H, W] in [-1, 1] ([B, T - 1] of clips
    [B, T, 3, H, W]); 0 for a static clip."""
    if clip.ndim not in (4, 5) or clip.shape[-4] < 2:
        raise ValueError(f"temporal_lpips: expected a clip [T ≥ 2, 3, H, W] or clips [B, T ≥ 2, 3, H, W], found "
                         f"shape {tuple(clip.shape)}")
    later, earlier = clip[..., 1:, :, :, :], clip[..., :-1, :, :, :]
    return lpips_per_frame(model, later.flatten(0, -4), earlier.flatten(0, -4)).view(later.shape[:-3])


def temporal_stability_gaps(model: lpips.LPIPS, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[B] mean frame-to-frame LPIPS of each generated clip minus its reference's (clips [B, T, 3, H, W] in
    [-1, 1], any T ≥ 2); in about [-1, 1], 0 when a generated clip changes between frames as much as the real one."""
    return temporal_lpips(model, generated).mean(-1) - temporal_lpips(model, reference).mean(-1)


def frame_luma(clip: torch.Tensor) -> torch.Tensor:
    """[T] mean BT.709 luma Y' of each frame of a clip [T, 3, H, W] in [-1, 1], in [0, 1]."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=clip.device)
    return ((clip.double() + 1) / 2).mean(dim=(2, 3)) @ weights


def flicker(clip: torch.Tensor) -> float:
    """Brightness flicker of a clip [T ≥ 3, 3, H, W] in [-1, 1]: mean |Y'[t+1] − 2·Y'[t] + Y'[t−1]| of the
    frames' mean luma Y' (in [0, 1]); 0 for a static clip and for any steady fade; lower is better, at most 2.

    The second temporal difference keeps only the fast part of the brightness signal: a linear fade or a slow
    exposure drift scores ~0, a one-frame flash of height h scores h, 2h, h on the three terms it touches. A frame
    mean barely reacts to motion (an object moving inside the frame keeps it), where per-pixel differences would
    count every motion as flicker.
    """
    if clip.ndim != 4 or clip.shape[0] < 3:
        raise ValueError(f"flicker: expected a clip [T ≥ 3, 3, H, W], found shape {tuple(clip.shape)}")
    luma = frame_luma(clip)
    return float((luma[2:] - 2 * luma[1:-1] + luma[:-2]).abs().mean())


__all__ = ["LUMA_WEIGHTS", "temporal_lpips", "temporal_stability_gaps", "frame_luma", "flicker"]
