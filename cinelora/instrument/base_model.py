"""The proxy base model: a small Wan2.1 I2V (the same diffusers classes) pre-trained by the project on the
procedural corpus, as Wan was pre-trained on web video, then saved as a diffusers folder that the `proxy`
profile loads through `model.source: pretrained`, the path the `full` profile loads Wan2.1 through.

Phases, each resumable and skipped once its product exists under `results/<name>/<profile>/model/`:
1. `vae`: the VAE learns to reconstruct corpus clips (L1 + a small KL); its latents' per-channel mean and std
   over the corpus are written into its config (`latents_mean`/`latents_std`, which the pipeline normalises by).
2. `transformer`: flow matching with the I2V condition (`objective.objective`, the loss LoRA training uses) on
   the corpus's latents, conditions, caption and image embeddings, encoded once by the saved VAE and the
   frozen encoders (cached on the device for the phase).
3. `assemble`: the whole pipeline folder (`models.save_components`) and its sidecar `weights.json` (sha256 of
   every file, the config hash, what trained each part).
4. `evidence`: on held-out corpus clips, reconstruction PSNR, frame-0 fidelity, error to the ground truth and
   motion of generated clips against "repeat the first frame" and the random-init transformer (evidence.csv,
   evidence.md, evidence.png).
The text and image encoders stay at their seeded random init, frozen (UMT5 and CLIP-vision of the preset): the
transformer learns to read them, as Wan's transformer learned to read its frozen encoders.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from cinelora import conditioning, models, objective, sampling, seeding
from cinelora.atomic import atomic_directory, atomic_path, atomic_write_text
from cinelora.config import BaseModelConfig, ModelConfig, config_hash
from cinelora.data.corpus import CorpusSpec, render_corpus
from cinelora.instrument.loop import Deadline, final_record, fit, sha256_file, training_device
from cinelora.metrics import fvd, i3d
from cinelora.metrics.lpips_distance import build_lpips, lpips_per_frame
from cinelora.results import sample_strip
from cinelora.rundir import RunDir
from cinelora.shapes import TEXT_TOKENS

MODEL_DIR = "model"
SIDECAR = "weights.json"
EVIDENCE = "evidence.md"  # the small table, written last
VAE_STORAGE = torch.float16  # the VAE runs in fp32; fp16 keeps 10 mantissa bits and halves the file
STRIP_ROWS = ("ground truth", "VAE recon.", "generated", "random init")
VAL_SIGMAS = (0.25, 0.5, 0.75)  # the transformer's validation flow loss at fixed noise levels


def _autocast(device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


def corpus_spec(cfg: BaseModelConfig, split: str) -> CorpusSpec:
    c = cfg.corpus
    count = c.train_clips if split == "train" else c.val_clips
    return CorpusSpec(f"base_{split}", tuple(c.domains), count, c.seed, c.height, c.width, c.num_frames)


def to_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] → float [B, 3, T, H, W] in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per clip of videos in [-1, 1] [B, ...], measured on the [0, 1] scale."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


@dataclass
class _Data:
    """The corpus on the device."""
    train: torch.Tensor  # uint8 [N, T, H, W, 3]
    val: torch.Tensor
    train_captions: list[str]
    val_captions: list[str]


def load_data(cfg: BaseModelConfig, device: torch.device, progress: bool, cache: Path) -> _Data:
    """The corpus's train and val clips, rendered (or read from `cache`) and moved to `device`."""
    train, val = (render_corpus(corpus_spec(cfg, s), progress=progress, cache=cache) for s in ("train", "val"))
    return _Data(torch.from_numpy(train.frames).to(device), torch.from_numpy(val.frames).to(device),
                 train.captions, val.captions)


def _batch_indices(seed: int, step: int, n: int, size: int) -> torch.Tensor:
    return torch.randint(n, (size,), generator=seeding.generator(seed, "data_order", step))


# --- phase 1: the VAE --------------------------------------------------------------------------------------


def vae_step_loss(cfg: BaseModelConfig, vae: AutoencoderKLWan, data: _Data):
    """The VAE phase's `step_loss(step)`: L1 + KL (+ LPIPS on `perceptual_frames` frames) of one seeded batch;
    encode and decode compiled when `vae.compile` names a torch.compile mode and the VAE is on a GPU; with
    `vae.channels_last` it first puts `vae`'s weights in channels_last_3d."""
    phase, device = cfg.vae, data.train.device
    perceptual = _evidence_lpips(cfg, device) if phase.perceptual_weight else None
    if phase.channels_last:
        for conv in (m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)):
            conv.to(memory_format=torch.channels_last_3d)

    def encode(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(device):
            posterior = vae.encode(video).latent_dist
        return posterior.mean, posterior.logvar

    def decode(z: torch.Tensor) -> torch.Tensor:
        with _autocast(device):
            return vae.decode(z).sample

    if phase.compile and device.type == "cuda":  # diffusers' chunk loops unroll; torch 2.11 breaks at "Rep" checks
        mode = None if phase.compile == "default" else phase.compile
        encode, decode = (torch.compile(f, mode=mode) for f in (encode, decode))

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        g = seeding.generator(cfg.seed, "data_order", step)
        idx = torch.randint(data.train.shape[0], (phase.batch_size,), generator=g)
        video = to_video(data.train[idx.to(device)])
        if step < phase.crop_steps:  # one random crop per batch: space and time
            t0, y0, x0 = (int(torch.randint(n - k + 1, (1,), generator=g)) for n, k in (
                (video.shape[2], phase.crop_frames), (video.shape[3], phase.crop_size),
                (video.shape[4], phase.crop_size)))
            video = video[:, :, t0:t0 + phase.crop_frames, y0:y0 + phase.crop_size, x0:x0 + phase.crop_size]
        mean, logvar = encode(video)
        eps = torch.randn(mean.shape, generator=g).to(device)
        recon = decode(mean + torch.exp(0.5 * logvar) * eps)
        l1 = (recon.float() - video).abs().mean()
        mean, logvar = mean.float(), logvar.float()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()  # per clip, summed over latents
        loss, terms = l1 + phase.kl_weight * kl, {"l1": l1.item(), "kl_per_latent": kl.item() / mean[0].numel()}
        if perceptual is not None:
            frames = _perceptual_frames(g, video.shape[0], video.shape[2], phase.perceptual_frames).to(device)
            distance = perceptual(_pick_frames(recon.float(), frames), _pick_frames(video, frames)).mean()
            loss, terms["lpips"] = loss + phase.perceptual_weight * distance, distance.item()
        return loss, terms

    return step_loss


def _perceptual_frames(g: torch.Generator, clips: int, frames: int, per_clip: int) -> torch.Tensor:
    """Frame indices [clips, k] the LPIPS term scores: `per_clip` distinct frames of each clip, or all of them."""
    if not per_clip or per_clip >= frames:
        return torch.arange(frames).expand(clips, frames)
    return torch.rand(clips, frames, generator=g).argsort(1)[:, :per_clip]


def _pick_frames(video: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Frames [B·k, 3, H, W] of video [B, 3, T, H, W] at indices [B, k]."""
    clips = torch.arange(video.shape[0], device=video.device).unsqueeze(1)
    return video.transpose(1, 2)[clips, frames].flatten(0, 1)


def _reconstruct(vae: AutoencoderKLWan, video: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """VAE round trip (posterior mode) of video [B, 3, T, H, W] in [-1, 1], in batches, in the VAE's dtype as
    the pipeline runs it."""
    return torch.cat([vae.decode(vae.encode(part.to(vae.dtype)).latent_dist.mode()).sample.float().clamp(-1, 1)
                      for part in video.split(batch)])


def _vae_validation(vae: AutoencoderKLWan, data: _Data):
    video = to_video(data.val[:64])

    def validate() -> dict[str, float]:
        recon = _reconstruct(vae, video)
        return {"psnr": psnr(recon, video).mean().item(), "l1": (recon - video).abs().mean().item()}

    return validate


def _latent_statistics(vae: AutoencoderKLWan, frames: torch.Tensor, clips: int = 1024) -> tuple[list, list]:
    """Per-channel mean and std of the posterior mode over the first `clips` corpus clips."""
    latents = [vae.encode(to_video(part)).latent_dist.mode().float() for part in frames[:clips].split(64)]
    z = torch.cat(latents).transpose(0, 1).flatten(1)  # [C, everything]
    return [round(v, 6) for v in z.mean(1).tolist()], [round(v, 6) for v in z.std(1).tolist()]


def _train_vae(cfg: BaseModelConfig, run: RunDir, c: models.WanComponents, data: _Data, deadline: Deadline,
               progress: bool) -> bool:
    vae = c.vae.float().requires_grad_(True)
    result = fit("vae", vae, vae_step_loss(cfg, vae, data), _vae_validation(vae, data), cfg.vae,
                 run.state / "vae_checkpoints", run.out / "vae_log.jsonl", deadline, progress)
    vae.requires_grad_(False).eval()
    if not result.finished:
        return False
    mean, std = _latent_statistics(vae, data.train)
    # the constructor, not from_config: from_config resets keys the first config took by default (these two)
    arguments = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    stored = AutoencoderKLWan(**{**arguments, "latents_mean": mean, "latents_std": std})
    stored.load_state_dict(vae.state_dict())
    models.cast_for_storage(stored, VAE_STORAGE)
    with atomic_directory(run.out / MODEL_DIR / "vae", overwrite=True) as tmp:
        stored.save_pretrained(tmp, safe_serialization=True)
    return True


# --- phase 2: the transformer -------------------------------------------------------------------------------


@dataclass
class _Encoded:
    """What the transformer trains on, per clip, on the device."""
    latents: torch.Tensor  # [N, 16, T', h, w] normalised
    condition: torch.Tensor  # [N, 20, T', h, w]
    image: torch.Tensor  # [N, tokens, D] CLIP-vision penultimate hidden states
    text: torch.Tensor  # [N, L, D] UMT5 states of each caption's first L tokens (zeros beyond the caption)
    empty: torch.Tensor  # [1, L, D] the empty caption's (CFG's negative prompt)


@torch.no_grad()
def encode_corpus(c: models.WanComponents, frames: torch.Tensor, captions: list[str], batch: int = 256) -> _Encoded:
    """Encode clips once with the frozen VAE and encoders (the pipeline's own conditioning functions)."""
    parts: dict[str, list[torch.Tensor]] = {"latents": [], "condition": [], "image": [], "text": []}
    for start in range(0, frames.shape[0], batch):
        video = to_video(frames[start:start + batch])
        parts["latents"].append(conditioning.encode_video_latents(c.vae, video))
        parts["condition"].append(conditioning.condition_latents(c.vae, video[:, :, 0], video.shape[2]))
        parts["image"].append(conditioning.encode_condition_images(c.image_processor, c.image_encoder,
                                                                   video[:, :, 0]))
        parts["text"].append(conditioning.encode_prompts(c.tokenizer, c.text_encoder, captions[start:start + batch]))
    text = torch.cat(parts["text"])
    length = int((text.abs().sum(-1) > 0).any(0).nonzero().max()) + 1  # the longest caption's tokens
    empty = conditioning.encode_prompts(c.tokenizer, c.text_encoder, [""])
    # float32 like the trained transformer's weights (bf16 autocast runs the matmuls on a GPU)
    return _Encoded(torch.cat(parts["latents"]).float(), torch.cat(parts["condition"]).float(),
                    torch.cat(parts["image"]).float(), text[:, :length].float(), empty[:, :length].float())


def _inputs(e: _Encoded, idx: torch.Tensor, drop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The objective's inputs of clips `idx`: text zero-padded back to the 512 tokens the model takes."""
    short = e.text[idx]
    if drop is not None:
        short = torch.where(drop.view(-1, 1, 1), e.empty.expand_as(short), short)
    text = short.new_zeros(short.shape[0], TEXT_TOKENS, short.shape[2])
    text[:, :short.shape[1]] = short
    return {"latents": e.latents[idx], "condition": e.condition[idx], "image": e.image[idx], "text": text}


def _transformer_step(cfg: BaseModelConfig, transformer: WanTransformer3DModel, c: models.WanComponents,
                      train: _Encoded):
    phase, device = cfg.transformer, train.latents.device

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        g = seeding.generator(cfg.seed, "data_order", step)
        idx = torch.randint(train.latents.shape[0], (phase.batch_size,), generator=g).to(device)
        drop = (torch.rand(phase.batch_size, generator=g) < phase.caption_dropout).to(device)
        inputs = _inputs(train, idx, drop)
        sigmas, noise = objective.draw_noise(cfg.seed, "noise", step, inputs["latents"], cfg.model.flow_shift)
        with _autocast(device):
            loss, terms = objective.objective(transformer, c, inputs, sigmas, noise, None, 0.0)
        return loss, {k: v.item() for k, v in terms.items()}

    return step_loss


def _transformer_validation(cfg: BaseModelConfig, transformer: WanTransformer3DModel, c: models.WanComponents,
                            val: _Encoded):
    n = min(128, val.latents.shape[0])
    idx = torch.arange(n, device=val.latents.device)
    inputs = _inputs(val, idx)
    noise = torch.randn(inputs["latents"].shape, generator=seeding.generator(cfg.seed, "validation", 0)).to(idx.device)

    def validate() -> dict[str, float]:
        out = {}
        for sigma in VAL_SIGMAS:
            sigmas = torch.full((n,), sigma, device=idx.device)
            with _autocast(idx.device):
                out[f"flow@{sigma:g}"] = objective.objective(transformer, c, inputs, sigmas, noise, None, 0.0)[0].item()
        out["flow"] = sum(out.values()) / len(out)
        return out

    return validate


def _train_transformer(cfg: BaseModelConfig, run: RunDir, c: models.WanComponents, data: _Data,
                       deadline: Deadline, progress: bool) -> bool:
    device = data.train.device
    train = encode_corpus(c, data.train, data.train_captions)
    val = encode_corpus(c, data.val, data.val_captions)
    transformer = models.build_transformer(cfg.model.architecture, torch.float32, device,
                                           seeding.derive_seed(cfg.seed, "init", 0)).requires_grad_(True)
    result = fit("transformer", transformer, _transformer_step(cfg, transformer, c, train),
                 _transformer_validation(cfg, transformer, c, val), cfg.transformer,
                 run.state / "transformer_checkpoints", run.out / "transformer_log.jsonl", deadline, progress)
    if not result.finished:
        return False
    models.cast_for_storage(transformer.requires_grad_(False), models.DTYPES[cfg.model.weight_dtype])
    with atomic_directory(run.out / MODEL_DIR / "transformer", overwrite=True) as tmp:
        transformer.save_pretrained(tmp, safe_serialization=True)
    return True


# --- phase 3: the folder ------------------------------------------------------------------------------------


def _assemble(cfg: BaseModelConfig, run: RunDir, c: models.WanComponents) -> None:
    """The pipeline folder (frozen encoders at their seeded init, the trained VAE and transformer) + sidecar."""
    folder = run.out / MODEL_DIR
    c.vae = AutoencoderKLWan.from_pretrained(folder / "vae", dtype=VAE_STORAGE)
    c.transformer = WanTransformer3DModel.from_pretrained(folder / "transformer",
                                                          dtype=models.DTYPES[cfg.model.weight_dtype])
    c.scheduler = models.wan_scheduler(cfg.model.flow_shift)
    models.save_components(c, folder, overwrite=True)
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.rglob("*.safetensors"))}
    sidecar = {"what": f"{cfg.name}: the proxy base model (a pre-trained small Wan2.1 I2V; proxy numbers only)",
               "config_sha256": config_hash(cfg), "architecture": cfg.model.architecture,
               "files": files, "total_bytes": sum(f["bytes"] for f in files.values()),
               "trained": {"vae": final_record(run.out / "vae_log.jsonl"),
                           "transformer": final_record(run.out / "transformer_log.jsonl"),
                           "text_encoder": "frozen seeded random init", "image_encoder": "frozen seeded random init"},
               "corpus": {"domains": cfg.corpus.domains, "train_clips": cfg.corpus.train_clips,
                          "size": [cfg.corpus.num_frames, cfg.corpus.height, cfg.corpus.width]}}
    atomic_write_text(folder / SIDECAR, json.dumps(sidecar, indent=1) + "\n")


def pretrained_config(cfg: BaseModelConfig, run: RunDir) -> ModelConfig:
    """How a generator config loads this base model (the `proxy` profile's model section)."""
    return ModelConfig(source="pretrained", path=str(run.out / MODEL_DIR), architecture=cfg.model.architecture,
                       weight_dtype=cfg.model.weight_dtype, flow_shift=cfg.model.flow_shift)


# --- phase 4: evidence --------------------------------------------------------------------------------------


def _generate(c: models.WanComponents, cfg: BaseModelConfig, frames: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Clips [B, 3, T, H, W] in [-1, 1] generated from the first frames of corpus clips uint8 [B, T, H, W, 3] and
    their captions, one generator per clip."""
    out = []
    e = cfg.evidence
    for start in range(0, frames.shape[0], e.batch_size):
        part = frames[start:start + e.batch_size]
        gens = [seeding.generator(cfg.seed, "generation", start + i) for i in range(part.shape[0])]
        clips = sampling.sample_clips(c, part[:, 0], captions[start:start + e.batch_size], part.shape[1], gens,
                                      e.num_inference_steps, e.guidance_scale)
        out.append(clips.transpose(1, 2))
    return torch.cat(out)


def _per_clip(video: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pixel measures of clips [B, 3, T, H, W] in [-1, 1] against the ground truth, on the [0, 1] scale."""
    sq = ((video.clamp(-1, 1) - reference) / 2).pow(2)
    return {"frame0_mse": sq[:, :, 0].flatten(1).mean(1), "mse": sq[:, :, 1:].flatten(1).mean(1),
            "psnr": psnr(video, reference),
            "motion": ((video[:, :, 1:] - video[:, :, :-1]).abs() / 2).flatten(1).mean(1)}


def _evidence_lpips(cfg: BaseModelConfig, device: torch.device):
    """The frozen LPIPS the evidence reports (evidence.lpips_backbone, evidence.lpips_heads)."""
    return build_lpips("alex", cfg.evidence.lpips_backbone, cfg.seed, heads=cfg.evidence.lpips_heads).to(device)


def _evaluator_rows(cfg: BaseModelConfig, reference: torch.Tensor, clips: dict[str, torch.Tensor]) -> list[dict]:
    """LPIPS to the ground truth (frames 1..) per clip, and FVD per model: the first half of the clips against the
    real second half, so that every model and the real-vs-real noise floor ("ground_truth") share one N."""
    e, device = cfg.evidence, reference.device
    distance = _evidence_lpips(cfg, device)
    features = i3d.random_i3d(cfg.seed) if e.i3d_weights == "random" else i3d.load_i3d(e.i3d_weights, e.i3d_release)
    features = features.to(device)
    half = reference.shape[0] // 2
    real = fvd.i3d_features(features, reference[half:2 * half])
    rows = []
    for model, video in [("ground_truth", reference), *clips.items()]:
        with torch.no_grad():
            scores = [lpips_per_frame(distance, v[:, 1:].transpose(0, 1), r[:, 1:].transpose(0, 1)).mean()
                      for v, r in zip(video, reference)]
        rows += [{"model": model, "clip": i, "metric": "lpips", "value": round(float(v), 6)}
                 for i, v in enumerate(scores)]
        if half >= 2:
            value = fvd.fvd(fvd.i3d_features(features, video[:half]), real).value
            rows.append({"model": model, "clip": "all", "metric": "fvd", "value": round(float(value), 6)})
    return rows


def _strip(rows: list[torch.Tensor], frames: int = 8) -> np.ndarray:
    """uint8 [rows·H, frames·W, 3] of clips [3, T, H, W] in [-1, 1] (frames evenly spaced)."""
    idx = np.linspace(0, rows[0].shape[1] - 1, frames).round().astype(int)
    lines = [torch.cat(list(((r[:, idx].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 0, 2, 3)), dim=2)
             for r in rows]
    return torch.cat(lines, dim=1).permute(1, 2, 0).cpu().numpy()


def _evidence(cfg: BaseModelConfig, run: RunDir, data: _Data) -> list[dict]:
    device = data.val.device
    c = models.build_components(pretrained_config(cfg, run), device, cfg.seed)  # the folder, as proxy loads it
    n = min(cfg.evidence.clips, data.val.shape[0])
    reference = to_video(data.val[:n])
    captions = data.val_captions[:n]
    with torch.no_grad():
        clips = {"vae_reconstruction": _reconstruct(c.vae, reference),
                 "generated": _generate(c, cfg, data.val[:n], captions),
                 "repeat_first_frame": reference[:, :, :1].expand_as(reference)}
        trained = c.transformer
        c.transformer = models.build_transformer(cfg.model.architecture, models.DTYPES[cfg.model.weight_dtype],
                                                 device, seeding.derive_seed(cfg.seed, "init", 0))
        clips["random_init"] = _generate(c, cfg, data.val[:n], captions)
        c.transformer = trained
    rows = []
    for model, video in [("ground_truth", reference), *clips.items()]:
        for metric, values in _per_clip(video, reference).items():
            rows += [{"model": model, "clip": i, "metric": metric, "value": round(float(v), 6)}
                     for i, v in enumerate(values.tolist())]
    rows += _evaluator_rows(cfg, reference, clips)
    strips = [_strip([reference[i], clips["vae_reconstruction"][i], clips["generated"][i], clips["random_init"][i]])
              for i in range(min(cfg.evidence.strips, n))]
    image = sample_strip(np.concatenate(strips), STRIP_ROWS * len(strips))
    with atomic_path(run.out / "evidence.png") as tmp:
        image.save(tmp, format="PNG")
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{model: {metric: mean over clips}}."""
    table: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        table.setdefault(r["model"], {}).setdefault(r["metric"], []).append(r["value"])
    return {m: {k: float(np.mean(v)) for k, v in metrics.items()} for m, metrics in table.items()}


def evidence_markdown(rows: list[dict], clips: int) -> str:
    """The small table of evidence.md (means over the held-out clips)."""
    summary = summarize(rows)
    metrics = ("psnr", "frame0_mse", "mse", "lpips", "fvd", "motion")
    lines = [f"Proxy base model on {clips} held-out pre-training clips (proxy numbers; pixels on [0, 1]).",
             "psnr / mse: all frames / frames 1.. against the ground truth; frame0_mse: the conditioning frame; "
             "lpips: frames 1.. against the ground truth; fvd: the first half of the clips against the real second "
             "half (ground_truth: the real-vs-real noise floor); motion: mean |frame t - frame t-1|.", "",
             "| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for model, values in summary.items():
        lines.append(f"| {model} | " + " | ".join(f"{values[m]:.4g}" if m in values else "-" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def _write_rows(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "clip", "metric", "value"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class MissingEvaluatorsError(FileNotFoundError):
    """The evidence phase's evaluator files are missing; said before any training starts."""


def check_evaluators(cfg: BaseModelConfig) -> None:
    e = cfg.evidence
    files = {"evidence.i3d_weights": e.i3d_weights, "evidence.lpips_backbone": e.lpips_backbone,
             "evidence.lpips_heads": e.lpips_heads}
    missing = [f"{key}: {path}" for key, path in files.items()
               if path not in ("", "random", "torchvision") and not Path(path).is_file()]
    if missing:
        raise MissingEvaluatorsError("the evidence phase scores with the proxy evaluators, and these files are "
                                     "missing: " + "; ".join(missing) + ". Run experiments/proxy_evaluators and "
                                     f"experiments/rlpips_metric at profile {cfg.profile} first")


def run_base_model(cfg: BaseModelConfig, run: RunDir, deadline: Deadline, progress: bool = True) -> bool:
    """Every phase not done yet; False when the deadline stopped it (run the same command again)."""
    check_evaluators(cfg)
    if (run.out / EVIDENCE).is_file():  # the last phase is written last: a chunk stopped after it has nothing left
        return True
    device = training_device()
    folder = run.out / MODEL_DIR
    seeding.seed_everything(cfg.seed)
    data = load_data(cfg, device, progress, run.state / "corpus")
    # the frozen encoders, tokenizer and processor: the preset's seeded random init (the `random` source's)
    c = models.build_components(ModelConfig(source="random", architecture=cfg.model.architecture,
                                            weight_dtype=cfg.model.weight_dtype, flow_shift=cfg.model.flow_shift),
                                device, cfg.seed)
    if not (folder / "vae" / "config.json").is_file() and not _train_vae(cfg, run, c, data, deadline, progress):
        return False
    c.vae = AutoencoderKLWan.from_pretrained(folder / "vae", dtype=torch.float32).to(device).requires_grad_(False)
    if not (folder / "transformer" / "config.json").is_file() and \
            not _train_transformer(cfg, run, c, data, deadline, progress):
        return False
    if not (folder / SIDECAR).is_file():
        _assemble(cfg, run, c)
    rows = _evidence(cfg, run, data)
    _write_rows(run.out / "evidence.csv", rows)
    atomic_write_text(run.out / EVIDENCE, evidence_markdown(rows, min(cfg.evidence.clips, data.val.shape[0])))
    return True


def load_weights_sidecar(run: RunDir) -> dict:
    return json.loads((run.out / MODEL_DIR / SIDECAR).read_text())


__all__ = ["MODEL_DIR", "SIDECAR", "EVIDENCE", "MissingEvaluatorsError", "check_evaluators", "corpus_spec", "encode_corpus", "load_data",
           "vae_step_loss", "pretrained_config", "run_base_model",
           "summarize", "evidence_markdown", "psnr", "to_video", "load_weights_sidecar"]
