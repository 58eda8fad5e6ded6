"""Temporal metrics: frame-to-frame LPIPS, its gap to the real clip, and flicker."""
from __future__ import annotations

import pytest
import torch

from cinelora.metrics.lpips_distance import build_lpips, lpips_per_frame
from cinelora.metrics.temporal import flicker, frame_luma, temporal_lpips, temporal_stability_gaps


@pytest.fixture(scope="module")
def lpips_model():
    return build_lpips("alex", "random", seed=0)


def smooth_clip(t: int = 9, size: int = 32) -> torch.Tensor:
    """A bright square sliding right by one pixel per frame over a gradient, [T, 3, H, W] in [-1, 1]."""
    ramp = torch.linspace(-0.8, 0.2, size)
    clip = ramp.expand(t, 3, size, size).clone()
    for i in range(t):
        clip[i, :, 10:18, 4 + i:12 + i] = 0.9
    return clip


def test_static_clip_scores_zero(lpips_model):
    static = smooth_clip()[:1].repeat(7, 1, 1, 1)
    assert temporal_lpips(lpips_model, static).shape == (6,)
    assert torch.allclose(temporal_lpips(lpips_model, static), torch.zeros(6), atol=1e-6)
    assert flicker(static) == pytest.approx(0.0, abs=1e-12)
    assert float(temporal_stability_gaps(lpips_model, static[None], static[None])[0]) == pytest.approx(0.0, abs=1e-6)


def test_temporal_lpips_compares_each_frame_with_the_previous_one(lpips_model):
    clip = smooth_clip()
    expected = lpips_per_frame(lpips_model, clip[1:], clip[:-1])
    assert torch.equal(temporal_lpips(lpips_model, clip), expected)
    # generated (moving) vs a real clip that stands still: positive gap of exactly the generated clip's mean
    still = clip[:1].repeat(clip.shape[0], 1, 1, 1)
    assert float(temporal_stability_gaps(lpips_model, clip[None], still[None])[0]) == pytest.approx(float(expected.mean()), abs=1e-6)
    assert float(temporal_stability_gaps(lpips_model, still[None], clip[None])[0]) == pytest.approx(-float(expected.mean()), abs=1e-6)


def test_a_flash_flickers_more_than_smooth_motion_or_a_fade():
    smooth = smooth_clip()
    flash = smooth.clone()
    flash[4] = (flash[4] + 0.6).clamp(-1, 1)  # one over-exposed frame
    fade = smooth * torch.linspace(1.0, 0.5, smooth.shape[0]).view(-1, 1, 1, 1)  # a steady fade
    assert flicker(flash) > 10 * flicker(smooth)
    assert flicker(flash) > 10 * flicker(fade)
    # a flash of luma height h touches three second differences: h + 2h + h over T - 2 terms
    h = float(frame_luma(flash)[4] - frame_luma(smooth)[4])
    assert flicker(flash) == pytest.approx(4 * h / (smooth.shape[0] - 2), abs=flicker(smooth) * 4 + 1e-9)


def test_luma_and_input_checks():
    white, black = torch.ones(3, 3, 4, 4), -torch.ones(3, 3, 4, 4)
    assert frame_luma(white).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert frame_luma(black).tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert flicker(torch.stack([white[0], black[0], white[0]])) == pytest.approx(2.0)  # the largest possible
    with pytest.raises(ValueError, match="T ≥ 3"):
        flicker(white[:2])
