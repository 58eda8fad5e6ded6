"""The training objective, in one place: the frozen encoders of a batch, the noise draws, flow matching
(+ an optional perceptual term on the decoded one-step estimate), PGD on the conditioning frame, and the
TRADES-style mix. `TrainingObjective` is the loss the training loop calls (as edm's `EDMLoss` or DiT's
`training_losses`); evaluation attacks conditioning frames with the same `attack_condition`."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from cinelora import conditioning, flow_matching, models, seeding
from cinelora.adversarial import pgd_attack, pixel_eps_to_unit_range
from cinelora.config import AdversarialConfig, ExperimentConfig, PerceptualConfig
from cinelora.metrics.lpips_distance import build_lpips
from cinelora.speed.context_parallel import sum_gradient_over_group

Terms = dict[str, torch.Tensor]


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


def encode_condition(c: models.WanComponents, first: torch.Tensor, num_frames: int,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(I2V condition latents, CLIP image tokens) of first frames [B, 3, H, W] in [-1, 1]; differentiable in
    `first`, which adversarial conditioning needs."""
    return (conditioning.condition_latents(c.vae, first, num_frames).to(dtype),
            conditioning.encode_condition_images(c.image_processor, c.image_encoder, first).to(first.device, dtype))


def encode_batch(c: models.WanComponents, batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Frozen encoders: latents x0, I2V condition, text and image embeddings (no gradients)."""
    video = batch["video"].to(device, c.vae.dtype)
    first = batch["condition"].to(device, c.vae.dtype)
    with torch.no_grad():
        condition, image = encode_condition(c, first, video.shape[2], dtype)
        return {
            "video": video,
            "first": first,
            "latents": conditioning.encode_video_latents(c.vae, video).to(dtype),
            "condition": condition,
            "text": conditioning.encode_prompts(c.tokenizer, c.text_encoder, batch["caption"]).to(device, dtype),
            "image": image,
        }


def draw_noise(seed: int, purpose: str, index: int, latents: torch.Tensor, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas [B], noise like latents) for one micro-step, on the CPU generator then moved: device-independent."""
    sigmas = flow_matching.sample_sigmas(latents.shape[0], shift, seeding.generator(seed, purpose, index))
    noise = torch.randn(latents.shape, generator=seeding.generator(seed, purpose, index + 1_000_003), dtype=torch.float32)
    return sigmas.to(latents.device, latents.dtype), noise.to(latents.device, latents.dtype)


def objective(transformer: torch.nn.Module, c: models.WanComponents, inputs: dict, sigmas: torch.Tensor,
              noise: torch.Tensor, perceptual: PerceptualDistance | None, weight: float) -> tuple[torch.Tensor, Terms]:
    """Flow-matching loss (+ weight · D(decoded x̂0, x0) when `perceptual` is given) and its terms."""
    noisy = flow_matching.add_noise(inputs["latents"], noise, sigmas)
    pred = transformer(
        hidden_states=torch.cat([noisy, inputs["condition"]], dim=1),
        timestep=sigmas * 1000,
        encoder_hidden_states=inputs["text"],
        encoder_hidden_states_image=inputs["image"],
        return_dict=False,
    )[0]
    flow = flow_matching.flow_matching_loss(pred, flow_matching.velocity_target(inputs["latents"], noise))
    if perceptual is None:
        return flow, {"flow": flow}
    distance = perceptual(c.vae, flow_matching.predicted_x0(noisy.float(), pred.float(), sigmas.float()),
                          inputs["video"])
    return flow + weight * distance, {"flow": flow, "perceptual": distance}


def attack_condition(transformer: torch.nn.Module, c: models.WanComponents, inputs: dict, sigmas: torch.Tensor,
                     noise: torch.Tensor, attack: AdversarialConfig, perceptual: PerceptualDistance | None = None,
                     weight: float = 0.0, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """The conditioning frames [B, 3, H, W] in [-1, 1] moved by PGD (L∞, no random start) to maximise `objective`
    on this batch's noise draw; ε and step are given in pixel units ×255 and converted to the [-1, 1] range (×2).
    Gradients are taken w.r.t. the frames only, so no parameter's gradient or optimizer state is touched;
    `group`: the context-parallel group, over which the frame's gradient is summed."""
    frames, dtype = inputs["video"].shape[2], inputs["latents"].dtype

    def loss_of_frame(first: torch.Tensor) -> torch.Tensor:
        condition, image = encode_condition(c, sum_gradient_over_group(first, group), frames, dtype)
        return objective(transformer, c, {**inputs, "condition": condition, "image": image}, sigmas, noise,
                         perceptual, weight)[0]

    return pgd_attack(loss_of_frame, inputs["first"], eps=pixel_eps_to_unit_range(attack.eps_255),
                      step_size=pixel_eps_to_unit_range(attack.step_255), steps=attack.steps, norm="linf",
                      lower=-1.0, upper=1.0)


class TrainingObjective:
    """The loss of one training micro-batch and its terms. Flow matching, + λ·D(decoded x̂0, x0) when the
    perceptual term is on; with adversarial conditioning the conditioning frame is first moved by PGD to maximise
    that same loss (through `attack_model`, the unwrapped transformer, so no DDP hook fires), then the LoRA trains
    on it, mixed TRADES-style, (1 − w)·L(adversarial) + w·L(clean), when adversarial.clean_weight = w > 0."""

    def __init__(self, cfg: ExperimentConfig, c: models.WanComponents, distance: PerceptualDistance | None,
                 group: dist.ProcessGroup | None = None):
        self.c, self.group, self.attack = c, group, cfg.adversarial
        self.perceptual = distance if cfg.perceptual.enabled else None
        self.weight = cfg.perceptual.weight

    def __call__(self, transformer: torch.nn.Module, attack_model: torch.nn.Module, inputs: dict,
                 sigmas: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        if not self.attack.enabled:
            return objective(transformer, self.c, inputs, sigmas, noise, self.perceptual, self.weight)
        first = attack_condition(attack_model, self.c, inputs, sigmas, noise, self.attack, self.perceptual,
                                 self.weight, self.group)
        with torch.no_grad():
            condition, image = encode_condition(self.c, first, inputs["video"].shape[2], inputs["latents"].dtype)
        loss, terms = objective(transformer, self.c, {**inputs, "condition": condition, "image": image}, sigmas,
                                noise, self.perceptual, self.weight)
        terms["adversarial"] = loss
        if self.attack.clean_weight > 0:
            clean, _ = objective(transformer, self.c, inputs, sigmas, noise, self.perceptual, self.weight)
            loss = (1 - self.attack.clean_weight) * loss + self.attack.clean_weight * clean
            terms["clean"] = clean
        return loss, terms


__all__ = ["PerceptualDistance", "TrainingObjective", "attack_condition", "encode_batch", "encode_condition",
           "draw_noise", "objective"]
