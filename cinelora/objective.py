"""The training objective shared by the training loop and the evaluation-time attack: frozen encoders,
noise draws, and flow matching (+ an optional perceptual term) of one batch."""
from __future__ import annotations

import torch

from cinelora import conditioning, flow_matching, models, seeding
from cinelora.losses import PerceptualDistance


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


def objective(transformer: torch.nn.Module, c: models.WanComponents, inputs: dict, sigmas: torch.Tensor,
              noise: torch.Tensor, perceptual: PerceptualDistance | None,
              weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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


def draw_noise(seed: int, purpose: str, index: int, latents: torch.Tensor, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas [B], noise like latents) for one micro-step, on the CPU generator then moved: device-independent."""
    sigmas = flow_matching.sample_sigmas(latents.shape[0], shift, seeding.generator(seed, purpose, index))
    noise = torch.randn(latents.shape, generator=seeding.generator(seed, purpose, index + 1_000_003), dtype=torch.float32)
    return sigmas.to(latents.device, latents.dtype), noise.to(latents.device, latents.dtype)
