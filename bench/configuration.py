""""Configuration time": build every Wan I2V component, then cache one clip's latents and embeddings.

The seed reports 187 s on one A100-80GB for loading the model plus caching one 81-frame 720p clip. Here
the weights are random at the preset's size, so `build_models` is construction and random init on the
device, not a disk read (reading 16.4B bf16 parameters adds about 33 GB / disk bandwidth). The caching
stages are the ones the training loop runs per clip (`cinelora.conditioning`), on a random clip in [-1, 1]:
VAE latents of the clip, the I2V condition latents (the first frame followed by black frames, a second
full-length VAE encode), UMT5 text embeddings (512 tokens) and CLIP image tokens of the first frame.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from cinelora import conditioning, models, seeding
from cinelora.config import ModelConfig

CAPTION = "A slow dolly shot across a rain-soaked street at night, neon reflections, film grain."


@contextlib.contextmanager
def _stage(seconds: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds[name] = time.perf_counter() - t0


def configuration_time(architecture: str, frames: int, height: int, width: int, device: torch.device,
                       seed: int = 0) -> dict[str, float]:
    """Wall seconds per stage (build_models, vae_latents, condition_latents, text_embeddings,
    image_embeddings) and their `total`; bf16 weights on the GPU (the VAE in fp32, as always), fp32 on the CPU."""
    dtype = "bf16" if device.type == "cuda" else "fp32"
    seconds: dict[str, float] = {}
    with _stage(seconds, "build_models", device):
        c = models.build_components(ModelConfig(source="random", architecture=architecture, weight_dtype=dtype),
                                    device, seed)
    g = seeding.generator(seed, "noise", 0)
    clip = (torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1).to(device)
    with torch.no_grad():
        with _stage(seconds, "vae_latents", device):
            conditioning.encode_video_latents(c.vae, clip)
        with _stage(seconds, "condition_latents", device):
            conditioning.condition_latents(c.vae, clip[:, :, 0], frames)
        with _stage(seconds, "text_embeddings", device):
            conditioning.encode_prompts(c.tokenizer, c.text_encoder, [CAPTION])
        with _stage(seconds, "image_embeddings", device):
            conditioning.encode_condition_images(c.image_processor, c.image_encoder, clip[:, :, 0])
    seconds["total"] = sum(seconds.values())
    return seconds


__all__ = ["configuration_time"]
