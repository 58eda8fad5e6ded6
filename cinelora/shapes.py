"""Shape facts of Wan2.1 I2V that sizes, FLOP counts and parallel layouts are computed from (pure Python)."""
from __future__ import annotations

VAE_SPATIAL, VAE_TEMPORAL = 8, 4  # Wan2.1 VAE: 8x8 spatial, 4x temporal compression (first frame kept)
TEXT_TOKENS = 512  # the I2V attention splits image and text tokens at encoder length - 512


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(T', H/8, W/8) of the Wan VAE latents of a clip of `frames` = 4k+1 frames of height x width pixels."""
    if (frames - 1) % VAE_TEMPORAL or height % VAE_SPATIAL or width % VAE_SPATIAL:
        raise ValueError(f"{frames}x{height}x{width}: the Wan VAE needs 4k+1 frames and sides divisible by 8")
    return (frames - 1) // VAE_TEMPORAL + 1, height // VAE_SPATIAL, width // VAE_SPATIAL


def video_tokens(config: dict, frames: int, height: int, width: int) -> int:
    """Transformer sequence length N of one clip: latent cells over the (1, 2, 2) patch."""
    t, h, w = latent_shape(frames, height, width)
    p_t, p_h, p_w = config["patch_size"]
    if t % p_t or h % p_h or w % p_w:
        raise ValueError(f"latents {t}x{h}x{w} do not divide into patches {tuple(config['patch_size'])}")
    return (t // p_t) * (h // p_h) * (w // p_w)
