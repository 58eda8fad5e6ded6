"""The one evaluation loop: generate a clip from each test clip's first frame and caption with the stock
`WanImageToVideoPipeline` (+ the experiment's LoRA), cache it, and score it against the ground truth.

Generated clips are cached as uint8 safetensors under `runs/<experiment>/<profile>/generated/<key>/`, where
the key hashes the resolved config and the LoRA file, so metrics can be recomputed without regenerating.
"""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cinelora import lora, models, seeding
from cinelora.config import ExperimentConfig, config_hash
from cinelora.data import VideoClipDataset
from cinelora.metrics.lpips_distance import build_lpips, lpips_per_frame

LORA_FILE = "pytorch_lora_weights.safetensors"


def _to_uint8(clip: torch.Tensor) -> torch.Tensor:
    """[T, 3, H, W] in [-1, 1] → uint8 in [0, 255]."""
    return ((clip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _from_uint8(clip: torch.Tensor) -> torch.Tensor:
    return clip.float() / 127.5 - 1


def cache_dir(cfg: ExperimentConfig, cache_root: Path, lora_dir: Path | None) -> Path:
    """Generated clips depend on the config and the LoRA weights: both are in the key."""
    h = hashlib.sha256(config_hash(cfg).encode())
    if lora_dir is not None:
        h.update((lora_dir / LORA_FILE).read_bytes())
    return cache_root / h.hexdigest()[:16]


def generate_clip(pipe, condition: torch.Tensor, caption: str, cfg: ExperimentConfig,
                  generator: torch.Generator) -> torch.Tensor:
    """[T, 3, H, W] in [-1, 1] from a first frame [3, H, W] in [-1, 1], as a user would call the pipeline."""
    image = Image.fromarray(_to_uint8(condition[None])[0].permute(1, 2, 0).numpy())
    video = pipe(image=image, prompt=caption, height=cfg.data.height, width=cfg.data.width,
                 num_frames=cfg.data.num_frames, num_inference_steps=cfg.eval.num_inference_steps,
                 guidance_scale=cfg.eval.guidance_scale, generator=generator, output_type="pt").frames
    return video[0].float() * 2 - 1  # the pipeline returns [B, T, 3, H, W] in [0, 1]


def _clip_seed_index(domain: str, clip: str) -> int:
    return zlib.crc32(f"{domain}/{clip}".encode())


def _save_strip(path: Path, reference: torch.Tensor, generated: torch.Tensor, max_frames: int = 8) -> None:
    """A PNG with ground-truth frames on top and generated frames below."""
    idx = np.linspace(0, reference.shape[0] - 1, min(max_frames, reference.shape[0])).round().astype(int)
    rows = [torch.cat(list(_to_uint8(clip[idx])), dim=2) for clip in (reference, generated)]
    Image.fromarray(torch.cat(rows, dim=1).permute(1, 2, 0).numpy()).save(path)


def evaluate(cfg: ExperimentConfig, lora_dir: Path | None, cache_root: Path, samples_dir: Path | None,
             *, generate_only: bool = False, progress: bool = True) -> list[dict]:
    """Tidy metric rows (experiment, profile, seed, domain, clip, condition, metric, value) for every domain."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    components = models.build_components(cfg.model, device=device, seed=cfg.seed)
    pipe = models.make_pipeline(components)
    if lora_dir is not None:
        lora.load_lora_into_pipeline(pipe, lora_dir)
    pipe.set_progress_bar_config(disable=True)
    metric = None if generate_only else build_lpips(cfg.eval.lpips_net, cfg.eval.lpips_backbone, cfg.seed).to(device)
    cache = cache_dir(cfg, cache_root, lora_dir)

    work = []
    for domain, source in sorted(cfg.eval.domains.items()):
        data = VideoClipDataset(source, cfg.data.height, cfg.data.width, cfg.data.num_frames,
                                cfg.data.frame_stride, skip_bad=cfg.data.skip_bad_videos)
        work += [(domain, data, i) for i in range(min(cfg.eval.clips_per_domain, len(data)))]
    rows = []
    for domain, data, i in tqdm(work, desc=f"eval {cfg.name}/{cfg.profile}", unit="clip", disable=not progress):
        item = data[i]
        clip = Path(item["path"]).stem
        cached = cache / domain / f"{clip}.safetensors"
        if cached.is_file():
            generated = _from_uint8(load_file(cached)["frames"])
        else:
            gen = seeding.generator(cfg.seed, "generation", _clip_seed_index(domain, clip))
            generated = generate_clip(pipe, item["condition"], item["caption"], cfg, gen)
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_file({"frames": _to_uint8(generated)}, cached.with_suffix(".tmp"))
            cached.with_suffix(".tmp").replace(cached)
            generated = _from_uint8(load_file(cached)["frames"])  # score exactly what a rerun would read
        if generate_only:
            continue
        reference = item["video"].permute(1, 0, 2, 3)  # [3, T, H, W] → [T, 3, H, W]
        value = float(lpips_per_frame(metric, generated, reference).mean())
        rows.append({"experiment": cfg.name, "profile": cfg.profile, "seed": cfg.seed, "domain": domain,
                     "clip": clip, "condition": "clean", "metric": "lpips", "value": value})
        if samples_dir is not None and i == 0:
            samples_dir.mkdir(parents=True, exist_ok=True)
            _save_strip(samples_dir / f"{domain}.png", reference, generated)
    return rows
