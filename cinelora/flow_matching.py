"""The rectified-flow objective Wan2.1 is trained with (Wan tech report, arXiv 2503.20314, §3.1).

Noise level σ ∈ (0, 1) is sampled uniformly and shifted as in Wan / SD3 (Esser et al. 2024, eq. 23):
σ' = s·σ / (1 + (s − 1)·σ); the noisy latent is x_σ = (1 − σ')·x0 + σ'·ε and the transformer predicts the
velocity v = ε − x0 at timestep 1000·σ' (the convention of diffusers' flow-matching schedulers, which
sample with the same v). Loss weighting is uniform over σ (plain MSE).
"""
from __future__ import annotations

import torch


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift; shift > 1 moves mass towards high noise (needed at high resolution)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_sigmas(batch_size: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """[B] shifted noise levels in (0, 1), drawn from the per-step generator."""
    u = torch.rand(batch_size, generator=generator, device=generator.device)
    return shift_sigmas(u.clamp(1e-3, 1 - 1e-3), shift)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 − σ)·x0 + σ·ε for latents [B, C, T, H, W] and sigmas [B]."""
    s = sigmas.view(-1, *([1] * (latents.dim() - 1))).to(latents.dtype)
    return (1 - s) * latents + s * noise


def velocity_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target v = ε − x0."""
    return noise - latents


def predicted_x0(noisy: torch.Tensor, velocity: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x̂0 = x_σ − σ·v̂: the clean latent implied by a velocity prediction."""
    s = sigmas.view(-1, *([1] * (noisy.dim() - 1))).to(noisy.dtype)
    return noisy - s * velocity


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32 (bf16 MSE loses precision at small residuals)."""
    return torch.nn.functional.mse_loss(pred.float(), target.float())
