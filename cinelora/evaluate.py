"""The one evaluation loop: for every domain a config lists, generate a clip from each test clip's first frame
and caption with the stock `WanImageToVideoPipeline` (+ the experiment's LoRA), from the clean frame and (for
generator robustness) from a PGD-attacked one, cache it, and score it against the ground truth.

Generated clips are cached as uint8 safetensors under `runs/<experiment>/<profile>/generated/<key>/`, where
the key hashes the resolved config and the LoRA file, so metrics are recomputed without regenerating.
Clips are generated `eval.batch_size` at a time by `sampling.sample_clips` (the stock pipeline's loop, batched),
each from its own seeded generator: a clip does not depend on its batch, and a batch of one is the stock
`WanImageToVideoPipeline` output bit for bit.
"""
from __future__ import annotations

import contextlib
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import lpips
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cinelora import lora, models, objective, sampling, seeding
from cinelora.atomic import atomic_path
from cinelora.config import AdversarialConfig, ExperimentConfig, config_hash
from cinelora.data.videos import VideoClipDataset
from cinelora.results import sample_strip
from cinelora.metrics import clip_sim, fvd, i3d, temporal
from cinelora.metrics.lpips_distance import build_lpips, lpips_per_frame

LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass
class Evaluators:
    """Frozen evaluator networks (sources named by the config, recorded in results)."""
    lpips: lpips.LPIPS
    rlpips: lpips.LPIPS | None
    clip: tuple  # (CLIPModel, CLIPProcessor)
    i3d: torch.nn.Module


def build_evaluators(cfg: ExperimentConfig, device: str) -> Evaluators:
    e = cfg.eval
    clip_model, clip_processor = clip_sim.random_clip(cfg.seed) if e.clip_model == "random" \
        else clip_sim.load_clip(e.clip_model)
    return Evaluators(
        lpips=build_lpips(e.lpips_net, e.lpips_backbone, cfg.seed, heads=e.lpips_heads).to(device),
        rlpips=build_lpips(e.lpips_net, e.lpips_backbone, cfg.seed, heads=e.rlpips_heads).to(device)
        if e.rlpips_heads else None,
        clip=(clip_model.to(device), clip_processor),
        i3d=(i3d.random_i3d(cfg.seed) if e.i3d_weights == "random"
             else i3d.load_i3d(e.i3d_weights, e.i3d_release)).to(device),
    )


def to_uint8(clip: torch.Tensor) -> torch.Tensor:
    """[T, 3, H, W] in [-1, 1] → uint8 in [0, 255]."""
    return ((clip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _from_uint8(clip: torch.Tensor) -> torch.Tensor:
    return clip.float() / 127.5 - 1


def style_lora_dir(cfg: ExperimentConfig, lora_dir: Path | None) -> Path | None:
    """The two-stage run's style LoRA, written next to the motion LoRA by `train.train`."""
    return lora_dir.parent / "style" / "lora" if lora_dir is not None and cfg.eval.pipeline == "two_stage" else None


def cache_dir(cfg: ExperimentConfig, cache_root: Path, lora_dir: Path | None) -> Path:
    """Generated clips depend on the config and the LoRA weights: all are in the key."""
    h = hashlib.sha256(config_hash(cfg).encode())
    for folder in (lora_dir, style_lora_dir(cfg, lora_dir)):
        if folder is not None:
            h.update((folder / LORA_FILE).read_bytes())
    return cache_root / h.hexdigest()[:16]


def generate_clips(c: models.WanComponents, firsts: torch.Tensor, captions: list[str], cfg: ExperimentConfig,
                   generators: list[torch.Generator], num_frames: int | None = None,
                   steps: int | None = None) -> torch.Tensor:
    """Clips [B, T, 3, H, W] in [-1, 1] from first frames [B, 3, H, W] in [-1, 1], as a user would call the
    pipeline: each frame goes in as an 8-bit image (an attacked frame is attacked as the image file it would
    be), one generator per clip (`sampling.sample_clips`: each clip the stock pipeline's output); `steps`
    denoising steps (default eval.num_inference_steps)."""
    images = to_uint8(firsts).permute(0, 2, 3, 1)
    return sampling.sample_clips(c, images, captions, num_frames or cfg.data.num_frames, generators,
                                 steps or cfg.eval.num_inference_steps, cfg.eval.guidance_scale)


def two_stage_clips(pipe, firsts: torch.Tensor, captions: list[str], cfg: ExperimentConfig,
                    generators: list[torch.Generator]) -> torch.Tensor:
    """The seed's two-stage path (arXiv 2510.27364): stage 1, the style LoRA alone makes a keyframe from the
    caption (a black condition frame, as it was trained); stage 2, style + motion LoRAs expand the keyframe
    into a clip [T, 3, H, W] in [-1, 1]. The real first frame is not used; each generator serves both stages."""
    c = _components_of(pipe)
    pipe.set_adapters(["style"])
    keyframes = generate_clips(c, torch.full_like(firsts, -1.0), captions, cfg, generators, num_frames=1)[:, 0]
    pipe.set_adapters(["style", "motion"])
    return generate_clips(c, keyframes, captions, cfg, generators)


def _components_of(pipe) -> models.WanComponents:
    return models.WanComponents(**{f: getattr(pipe, f) for f in models.WanComponents.__dataclass_fields__})


def attacked_conditions(components: models.WanComponents, items: list[dict], cfg: ExperimentConfig,
                        indices: list[int]) -> torch.Tensor:
    """The clips' first frames [B, 3, H, W] moved by PGD (L∞, eval.attack_eps_255, steps of ε/4) to maximise the
    model's flow-matching loss on each ground-truth clip at its own seeded noise draw: the training attack. One
    batch: the batch loss is the clips' mean and the clips do not interact, so each frame's gradient sign (all
    that L∞ PGD uses) is its own, as if it were attacked alone."""
    device = components.transformer.device
    dtype = components.transformer.dtype
    batch = {"video": torch.stack([it["video"] for it in items]),
             "condition": torch.stack([it["condition"] for it in items]), "caption": [it["caption"] for it in items]}
    inputs = objective.encode_batch(components, batch, device, dtype)
    draws = [objective.draw_noise(cfg.seed, "generation", index, inputs["latents"][j:j + 1], cfg.model.flow_shift)
             for j, index in enumerate(indices)]
    sigmas, noise = (torch.cat(parts) for parts in zip(*draws))
    attack = AdversarialConfig(enabled=True, eps_255=cfg.eval.attack_eps_255, step_255=cfg.eval.attack_eps_255 / 4,
                               steps=cfg.eval.attack_steps, clean_weight=0.0)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" and dtype == torch.bfloat16 \
        else contextlib.nullcontext()
    with autocast:
        return objective.attack_condition(components.transformer, components, inputs, sigmas, noise,
                                          attack).float().cpu()


METRIC_PIXELS = 81 * 720 * 1280  # frames x pixels the per-clip metrics take at once: one 720p x 81 clip


def _clip_seed_index(domain: str, clip: str) -> int:
    return zlib.crc32(f"{domain}/{clip}".encode())


def save_strip(path: Path, reference: torch.Tensor, generated: torch.Tensor, max_frames: int = 8) -> None:
    """A PNG with ground-truth frames on top and generated frames below (`results.sample_strip`)."""
    idx = np.linspace(0, reference.shape[0] - 1, min(max_frames, reference.shape[0])).round().astype(int)
    rows = [torch.cat(list(to_uint8(clip[idx])), dim=2) for clip in (reference, generated)]
    strip = sample_strip(torch.cat(rows, dim=1).permute(1, 2, 0).numpy())
    with atomic_path(path) as tmp:
        strip.save(tmp, format="PNG")


def clip_metrics(ev: Evaluators, generated: torch.Tensor, reference: torch.Tensor,
                 captions: list[str]) -> list[dict[str, float]]:
    """Per-clip metrics of generated clips vs their ground truth, both [B, T, 3, H, W] in [-1, 1], one dict per clip;
    each network sees the B·T frames at once (a clip's values do not depend on the others')."""
    (b, t), model, processor = generated.shape[:2], *ev.clip
    frames, real = generated.flatten(0, 1), reference.flatten(0, 1)
    images = clip_sim.image_embeddings(model, processor, frames).view(b, t, -1)
    texts = clip_sim.text_embeddings(model, processor, captions)
    distances = {"lpips": lpips_per_frame(ev.lpips, frames, real).view(b, t).mean(1)}
    if ev.rlpips is not None:
        distances["rlpips"] = lpips_per_frame(ev.rlpips, frames, real).view(b, t).mean(1)
    # |generated − real| frame-to-frame LPIPS: a signed gap would reward frozen clips
    gaps = temporal.temporal_stability_gaps(ev.lpips, generated, reference).abs()
    return [{"lpips": float(distances["lpips"][i]), "clip_sim": clip_sim.caption_similarity(images[i], texts[i]),
             "frame_consistency": clip_sim.consecutive_similarity(images[i]), "temporal_lpips_gap": float(gaps[i]),
             "flicker": temporal.flicker(generated[i]),
             **({"rlpips": float(distances["rlpips"][i])} if "rlpips" in distances else {})} for i in range(b)]


def metric_groups(count: int, clip_pixels: int) -> list[range]:
    """Clip index ranges scored together: as many clips as hold METRIC_PIXELS pixels (at least one)."""
    size = max(1, METRIC_PIXELS // clip_pixels)
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def _dataset(cfg: ExperimentConfig, source: str) -> VideoClipDataset:
    return VideoClipDataset(source, cfg.data.height, cfg.data.width, cfg.data.num_frames, cfg.data.frame_stride,
                            skip_bad=cfg.data.skip_bad_videos)


def evaluate(cfg: ExperimentConfig, lora_dir: Path | None, cache_root: Path, samples_dir: Path | None,
             *, generate_only: bool = False, progress: bool = True) -> list[dict]:
    """Tidy metric rows (experiment, profile, seed, domain, clip, condition, metric, value) for every domain
    and condition ("clean", and "attacked" when eval.attack); FVD rows are per (domain, condition), clip "all"."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    components = models.build_components(cfg.model, device=device, seed=cfg.seed)
    pipe = models.make_pipeline(components)
    style_dir = style_lora_dir(cfg, lora_dir)
    if lora_dir is not None:
        lora.load_lora_into_pipeline(pipe, lora_dir, adapter_name="motion" if style_dir else "default")
    if style_dir is not None:
        lora.load_lora_into_pipeline(pipe, style_dir, adapter_name="style")
    pipe.set_progress_bar_config(disable=True)
    ev = None if generate_only else build_evaluators(cfg, device)
    cache = cache_dir(cfg, cache_root, lora_dir)
    conditions = ("clean", "attacked") if cfg.eval.attack else ("clean",)

    rows, features = [], {}
    key = {"experiment": cfg.name, "profile": cfg.profile, "seed": cfg.seed}
    domains = sorted(cfg.eval.domains.items())
    total = sum(min(cfg.eval.clips_per_domain, len(_dataset(cfg, source))) for _, source in domains)
    bar = tqdm(total=total * len(conditions), desc=f"eval {cfg.name}/{cfg.profile}", unit="clip",
               disable=not progress)
    for domain, source in domains:
        data = _dataset(cfg, source)
        items = [data[i] for i in range(min(cfg.eval.clips_per_domain, len(data)))]
        clips = [Path(item["path"]).stem for item in items]
        indices = [_clip_seed_index(domain, clip) for clip in clips]
        for condition in conditions:
            files = [cache / domain / condition / f"{clip}.safetensors" for clip in clips]
            todo = [i for i, f in enumerate(files) if not f.is_file()]
            bar.update(len(items) - len(todo))
            for start in range(0, len(todo), cfg.eval.batch_size):
                batch = todo[start:start + cfg.eval.batch_size]
                firsts = torch.stack([items[i]["condition"] for i in batch]) if condition == "clean" else \
                    attacked_conditions(components, [items[i] for i in batch], cfg, [indices[i] for i in batch])
                generators = [seeding.generator(cfg.seed, "generation", indices[i]) for i in batch]
                captions = [items[i]["caption"] for i in batch]
                generated = two_stage_clips(pipe, firsts, captions, cfg, generators) if style_dir is not None \
                    else generate_clips(components, firsts, captions, cfg, generators)
                for i, clip in zip(batch, generated):
                    with atomic_path(files[i]) as tmp:
                        save_file({"frames": to_uint8(clip).contiguous()}, tmp)
                bar.update(len(batch))
            if generate_only:
                continue
            for group in metric_groups(len(items), items[0]["video"][0].numel()):
                # score exactly what a rerun reads; references [3, T, H, W] → [T, 3, H, W]
                generated = torch.stack([_from_uint8(load_file(files[i])["frames"]) for i in group])
                reference = torch.stack([items[i]["video"].permute(1, 0, 2, 3) for i in group])
                scores = clip_metrics(ev, generated, reference, [items[i]["caption"] for i in group])
                rows += [{**key, "domain": domain, "clip": clips[i], "condition": condition, "metric": metric,
                          "value": value} for i, values in zip(group, scores) for metric, value in values.items()]
                features.setdefault((domain, condition), []).append(
                    fvd.i3d_features(ev.i3d, generated.permute(0, 2, 1, 3, 4)))
                if samples_dir is not None and group.start == 0 and condition == "clean":
                    samples_dir.mkdir(parents=True, exist_ok=True)
                    save_strip(samples_dir / f"{domain}.png", reference[0], generated[0])
        if not generate_only:
            features[(domain, "real")] = [fvd.i3d_features(ev.i3d, torch.stack([items[i]["video"] for i in group]))
                                          for group in metric_groups(len(items), items[0]["video"][0].numel())]
    bar.close()
    warned: list[tuple[str, str]] = []  # said once for the whole evaluation, not once per FVD
    for (domain, name), feats in sorted(features.items()):
        if name == "real":
            continue
        if sum(f.shape[0] for f in feats) < 2:
            tqdm.write(f"FVD {domain}/{name}: skipped, it needs at least 2 clips (has {sum(f.shape[0] for f in feats)})")
            continue
        result = fvd.fvd(torch.cat(feats), torch.cat(features[(domain, "real")]), cfg.eval.fvd_covariance)
        if result.warning:
            warned.append((f"{domain}/{name}", result.warning))
        rows.append({**key, "domain": domain, "clip": "all", "condition": name, "metric": "fvd", "value": result.value})
        rows.append({**key, "domain": domain, "clip": "all", "condition": name, "metric": "fvd_clips",
                     "value": float(result.n_a)})
    if warned:
        tqdm.write(f"FVD ({len(warned)} of them: {', '.join(name for name, _ in warned)}): {warned[0][1]}")
    return rows
