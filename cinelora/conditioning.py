"""Batched versions of the inputs `WanImageToVideoPipeline` builds per call, for training and caching.

Each function computes what the stock pipeline computes (the tests compare them sample by sample), but for a
batch of float tensors in [-1, 1]. None of them quantizes to uint8 or disables autograd: PGD on the
conditioning frame differentiates through `encode_condition_images` and `condition_latents`; callers that
only encode wrap them in `torch.no_grad()`.

Choices, made to match the stock pipeline so that training and sampling see the same conditioning:
- CLIP input: diffusers' `CLIPImageProcessor` resizes the shortest edge to 224 (bicubic, antialiased) and takes
  the centre 224x224 crop, so at 16:9 the image encoder sees the middle 56% of the frame's width. Wan's original
  code resizes the whole frame to 224x224 instead (aspect not kept). We keep diffusers' centre crop: a LoRA
  trained on whole-frame embeddings would be sampled with centre-crop ones.
- VAE latents: the posterior mode (mean), as `prepare_latents` uses for the condition (sample_mode="argmax")
  and Wan's own VAE wrapper returns; deterministic, so latents can be cached.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean
from transformers import (CLIPImageProcessor, CLIPVisionModelWithProjection, PreTrainedTokenizerBase,
                          UMT5EncoderModel)

from cinelora.shapes import TEXT_TOKENS


def encode_prompts(tokenizer: PreTrainedTokenizerBase, text_encoder: UMT5EncoderModel, captions: list[str],
                   max_length: int = TEXT_TOKENS) -> torch.Tensor:
    """UMT5 embeddings [B, 512, D] (text encoder dtype), zero beyond each caption's tokens.

    = `WanImageToVideoPipeline._get_t5_prompt_embeds`: same cleaning (ftfy, html unescape, whitespace), same
    tokenizer call, last hidden state trimmed to each prompt's length and zero-padded back to 512.
    """
    if max_length != TEXT_TOKENS:
        raise ValueError(f"max_length={max_length}: the Wan I2V transformer needs exactly {TEXT_TOKENS} text "
                         "tokens (its attention splits image and text tokens by that number)")
    tokens = tokenizer([prompt_clean(c) for c in captions], padding="max_length", max_length=max_length,
                       truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = tokens.input_ids.to(text_encoder.device), tokens.attention_mask.to(text_encoder.device)
    hidden = text_encoder(ids, mask).last_hidden_state
    # padding is on the right, so trimming to the length and zero-padding = zeroing the padded positions
    return hidden.masked_fill(~mask.bool().unsqueeze(-1), 0.0)


def clip_pixels(image_processor: CLIPImageProcessor, frames: torch.Tensor) -> torch.Tensor:
    """CLIP `pixel_values` [B, 3, S, S] (float32, normalised) from frames [B, 3, H, W] in [-1, 1].

    The processor's own torchvision ops (resize, centre crop) on float pixels in [0, 255], the range its
    rescale expects, then rescale and normalise: its pipeline without the uint8 round trip, differentiable.
    """
    if getattr(image_processor, "backend", None) != "torchvision":
        raise TypeError(f"{type(image_processor).__name__}: need the torchvision-backend CLIPImageProcessor")
    p = image_processor
    pixels = (frames.float() + 1.0) * 127.5
    if p.do_resize:
        pixels = p.resize(pixels, size=p.size, resample=p.resample)
    if p.do_center_crop:
        pixels = p.center_crop(pixels, p.crop_size)
    if p.do_rescale:
        pixels = pixels * p.rescale_factor
    if p.do_normalize:
        mean = torch.tensor(p.image_mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(p.image_std, device=pixels.device).view(1, -1, 1, 1)
        pixels = (pixels - mean) / std
    return pixels


def encode_condition_images(image_processor: CLIPImageProcessor, image_encoder: CLIPVisionModelWithProjection,
                            frames: torch.Tensor) -> torch.Tensor:
    """CLIP image tokens [B, N, D] (N = 257 for ViT-H/14 at 224) of conditioning frames [B, 3, H, W] in [-1, 1].

    = `WanImageToVideoPipeline.encode_image`: the penultimate hidden state of the vision tower.
    """
    pixels = clip_pixels(image_processor, frames).to(image_encoder.device, image_encoder.dtype)
    return image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]


def normalize_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """(z - latents_mean) / latents_std per channel, in float32, written as the pipeline writes it."""
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.device, torch.float32)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents.device, torch.float32)
    return (latents.float() - mean) * inv_std


def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Video [B, 3, 4(T'-1)+1, H, W] in about [-1, 1] (not clamped: gradients flow) from normalised latents.

    The Wan VAE is causal in time, so decoding the first k latent frames gives exactly the first 4(k-1)+1
    frames of the full decode: a loss on early frames decodes only those.
    """
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.device, torch.float32)
    std = torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents.device, torch.float32)
    return vae.decode((latents.float() * std + mean).to(vae.dtype)).sample


def encode_video_latents(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """Normalised VAE latents [B, 16, (T-1)/4+1, H/8, W/8] float32 of video [B, 3, T, H, W] in [-1, 1].

    The posterior mode (`sample_mode="argmax"` in the pipeline), so the same clip always gives the same x0.
    """
    posterior = vae.encode(video.to(vae.device, vae.dtype)).latent_dist
    return normalize_latents(vae, posterior.mode())


def condition_latents(vae: AutoencoderKLWan, first_frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The I2V condition [B, 4 + 16, T', h, w] float32 of first frames [B, 3, H, W] in [-1, 1].

    = the second output of `WanImageToVideoPipeline.prepare_latents` (no last frame): 4 mask channels (1 on the
    first latent frame, 0 elsewhere: the pipeline repeats the first pixel frame's mask 4x and folds time by 4)
    then the normalised latents of [first frame, num_frames - 1 black frames]. The transformer input is
    cat(noisy latents, this) along channels: 16 + 20 = 36.
    """
    scale_t = vae.config.scale_factor_temporal
    if (num_frames - 1) % scale_t:
        raise ValueError(f"num_frames={num_frames}: the Wan VAE needs {scale_t}k+1 frames")
    b, c, h, w = first_frames.shape
    video = torch.cat([first_frames.unsqueeze(2), first_frames.new_zeros(b, c, num_frames - 1, h, w)], dim=2)
    latents = encode_video_latents(vae, video)
    mask = latents.new_zeros(b, scale_t, *latents.shape[2:])
    mask[:, :, 0] = 1.0
    return torch.cat([mask, latents], dim=1)


__all__ = ["TEXT_TOKENS", "encode_prompts", "clip_pixels", "encode_condition_images", "normalize_latents",
           "decode_latents", "encode_video_latents", "condition_latents"]
