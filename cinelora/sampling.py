"""Batched image-to-video sampling: the denoising loop of `WanImageToVideoPipeline.__call__` over a batch of
clips, each with its own first frame, caption and generator.

The stock pipeline repeats one image's embedding for every prompt of a batch, so it samples one clip per call.
Here every input is per clip, and each clip's starting noise is drawn from its own generator exactly as the
pipeline draws it (`randn_tensor` of shape [1, 16, T', h, w], float32), so a clip's output does not depend on
the batch it is in, and equals the pipeline's for the same seed up to batched-matmul rounding (a test holds it
to the stock pipeline). The scheduler steps every clip with the same coefficients (UniPC's are per timestep);
classifier-free guidance makes the conditional and unconditional calls apart, as the pipeline does, so a batch of
one clip is bit-identical to the pipeline's output.
"""
from __future__ import annotations

import copy

import torch
from diffusers import UniPCMultistepScheduler, WanTransformer3DModel

from cinelora import conditioning, models


def initial_noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """[B, *shape] float32: clip b's noise from generators[b], drawn where its generator lives, then moved."""
    return torch.cat([torch.randn((1, *shape), generator=g, device=g.device, dtype=torch.float32)
                      for g in generators]).to(device)


@torch.no_grad()
def denoise(transformer: WanTransformer3DModel, scheduler: UniPCMultistepScheduler, condition: torch.Tensor,
            text: torch.Tensor, negative_text: torch.Tensor | None, image: torch.Tensor, noise: torch.Tensor,
            steps: int, guidance_scale: float) -> torch.Tensor:
    """Normalised latents [B, 16, T', h, w] float32 from the I2V condition [B, 20, T', h, w], text [B, 512, D],
    negative text (None when guidance_scale <= 1), CLIP image tokens [B, N, D] and starting noise."""
    scheduler = copy.deepcopy(scheduler)  # its step counter is state; the caller's stays untouched
    device, dtype = noise.device, transformer.dtype
    scheduler.set_timesteps(steps, device=device)
    image, condition = image.to(device, dtype), condition.to(device)
    latents = noise

    def velocity(model_input: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return transformer(hidden_states=model_input, timestep=t.expand(model_input.shape[0]),
                           encoder_hidden_states=text.to(device, dtype), encoder_hidden_states_image=image,
                           return_dict=False)[0]

    for t in scheduler.timesteps:
        model_input = torch.cat([latents, condition], dim=1).to(dtype)
        pred = velocity(model_input, t, text)
        if guidance_scale > 1.0:  # a second call, as the pipeline makes it: a clip alone is bit-identical to it
            uncond = velocity(model_input, t, negative_text)
            pred = uncond + guidance_scale * (pred - uncond)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    return latents


@torch.no_grad()
def sample_clips(c: models.WanComponents, first_frames: torch.Tensor, captions: list[str], num_frames: int,
                 generators: list[torch.Generator], steps: int, guidance_scale: float,
                 negative_caption: str = "") -> torch.Tensor:
    """Clips [B, T, 3, H, W] in [-1, 1] from 8-bit first frames uint8 [B, H, W, 3] (the image files a user gives
    the pipeline), one caption and one generator per clip: for each clip, the stock pipeline's output.

    The frames are prepared as the pipeline prepares a PIL image: x / 255 · 2 − 1 for the VAE condition, and
    the image processor on the 8-bit pixels for CLIP (`WanImageToVideoPipeline.encode_image`)."""
    if first_frames.dtype != torch.uint8 or first_frames.dim() != 4 or first_frames.shape[-1] != 3:
        raise ValueError(f"first frames: expected uint8 [B, H, W, 3], got {first_frames.dtype} {list(first_frames.shape)}")
    device = c.transformer.device
    first = (first_frames.float() / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2).to(device)
    condition = conditioning.condition_latents(c.vae, first.to(c.vae.dtype), num_frames)
    pixels = c.image_processor(images=list(first_frames.cpu().numpy()), return_tensors="pt").pixel_values
    image = c.image_encoder(pixel_values=pixels.to(device, c.image_encoder.dtype),
                            output_hidden_states=True).hidden_states[-2]
    text = conditioning.encode_prompts(c.tokenizer, c.text_encoder, captions)
    negative = conditioning.encode_prompts(c.tokenizer, c.text_encoder, [negative_caption] * len(captions)) \
        if guidance_scale > 1.0 else None
    noise = initial_noise(generators, (c.vae.config.z_dim, *condition.shape[2:]), device)
    latents = denoise(c.transformer, c.scheduler, condition, text, negative, image, noise, steps, guidance_scale)
    return decode(c.vae, latents)


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Clips [B, T, 3, H, W] in [-1, 1] from normalised latents, in the pipeline's own arithmetic (division by the
    reciprocal std, its postprocessing to [0, 1]) so that outputs match it bit for bit."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    latents = latents.to(vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
    video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
    return ((video / 2 + 0.5).clamp(0, 1) * 2 - 1).transpose(1, 2).float()


__all__ = ["initial_noise", "denoise", "sample_clips", "decode"]
