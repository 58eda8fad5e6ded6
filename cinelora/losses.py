"""Pluggable terms of the one training objective: the perceptual distance between the decoded one-step
estimate x̂0 and the ground-truth clip, and adversarial conditioning (PGD on the I2V conditioning frame)."""
from __future__ import annotations

import math
from typing import Callable

import torch

from cinelora import conditioning
from cinelora.adversarial import pgd_attack, pixel_eps_to_unit_range
from cinelora.config import AdversarialConfig, PerceptualConfig
from cinelora.metrics.lpips_distance import build_lpips


class PerceptualDistance:
    """D(decode(x̂0), x0) with D = LPIPS or R-LPIPS (the heads named in the config).

    Memory-aware: only the first k latent frames are decoded, k being the fewest whose causal decode covers
    `frames` frames after the conditioning frame (frame 0 is given to the model, so it is not scored).
    """

    def __init__(self, cfg: PerceptualConfig, seed: int, device: torch.device):
        self.model = build_lpips(cfg.net, cfg.backbone, seed, heads=cfg.heads).to(device)
        self.frames = cfg.frames

    def __call__(self, vae, latents_hat: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Mean D over the scored frames; latents_hat [B, 16, T', h, w] normalised, video [B, 3, T, H, W] in [-1, 1]."""
        scale_t = vae.config.scale_factor_temporal
        k = min(latents_hat.shape[2], math.ceil(self.frames / scale_t) + 1)
        decoded = conditioning.decode_latents(vae, latents_hat[:, :, :k])
        last = min(decoded.shape[2], video.shape[2], self.frames + 1)
        first = 1 if last > 1 else 0
        gen = decoded[:, :, first:last].transpose(1, 2).flatten(0, 1)  # [B·F, 3, H, W]
        ref = video[:, :, first:last].transpose(1, 2).flatten(0, 1).to(gen)
        return self.model(gen.float(), ref.float()).mean()


def attack_condition(loss_of_frame: Callable[[torch.Tensor], torch.Tensor], first_frames: torch.Tensor,
                     cfg: AdversarialConfig) -> torch.Tensor:
    """PGD (L∞, no random start) on conditioning frames [B, 3, H, W] in [-1, 1] that maximises the training
    loss; ε and step are given in pixel units ×255 and converted to the [-1, 1] range (×2). Gradients are
    taken w.r.t. the frames only, so the LoRA's gradients and optimizer state are untouched."""
    return pgd_attack(loss_of_frame, first_frames, eps=pixel_eps_to_unit_range(cfg.eps_255),
                      step_size=pixel_eps_to_unit_range(cfg.step_255), steps=cfg.steps, norm="linf",
                      lower=-1.0, upper=1.0)
