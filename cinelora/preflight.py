"""Before any work starts: every file a generator experiment will read (model folder, data, evaluator
weights, metric heads) and the optional packages its config asks for (flash-attn-4, tensorboard) are checked,
and all that is missing is reported at once, so a long run never dies at its evaluation for want of a file."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from cinelora import models
from cinelora.config import ExperimentConfig
from cinelora.metrics.lpips_distance import is_trunk_file, trunk_path
from cinelora.speed import fa4
from cinelora.speed.levers import FA4


class MissingInputsError(FileNotFoundError):
    """One or more inputs of an experiment are absent; the message lists each with where it comes from."""


def missing_inputs(cfg: ExperimentConfig, *, train: bool, evaluate: bool) -> list[str]:
    """Human-readable lines, one per missing input of the phases asked for."""
    problems = []
    if train and cfg.speed.attention_backend == FA4 and not fa4.installed():
        problems.append(f"speed.attention_backend: fa4 needs the flash-attn-4 package ({fa4.PACKAGE_HINT})")
    if train and cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        problems.append("train.tensorboard: true needs the tensorboard package (pip install -r requirements.txt), "
                        "or set it to false")
    model_path = Path(cfg.model.path)
    if cfg.model.source == "pretrained" and not model_path.is_dir():
        problems.append(f"model.path: {model_path} is not a folder (a diffusers-format Wan2.1 I2V folder; at proxy "
                        "the project's base model: make proxy-base)")
    elif cfg.model.source == "pretrained":
        problems += [f"model.path: {m}" for m in models.missing_model_files(model_path)]
    data = {"data.train": cfg.data.train, "data.val": cfg.data.val} if train else {}
    if evaluate:
        data |= {f"eval.domains.{d}": s for d, s in cfg.eval.domains.items()}
    if not cfg.world.enabled:  # the procedural world is written before use; real data must exist already
        problems += [f"{key}: {src} does not exist" for key, src in data.items() if not Path(src).exists()]
    uses_distance = train and (cfg.perceptual.enabled or cfg.train.early_stop_metric == "perceptual")
    trunks = ({cfg.perceptual.net} if uses_distance and cfg.perceptual.backbone == "torchvision" else set()) | \
        ({cfg.eval.lpips_net} if evaluate and cfg.eval.lpips_backbone == "torchvision" else set())
    problems += [f"LPIPS trunk: {trunk_path(net)} (torchvision's file) is missing" for net in sorted(trunks)
                 if not trunk_path(net).is_file()]
    trunk_files = ({"perceptual.backbone": cfg.perceptual.backbone} if uses_distance else {}) | \
        ({"eval.lpips_backbone": cfg.eval.lpips_backbone} if evaluate else {})
    problems += [f"{key}: {path} is missing (run experiments/proxy_evaluators for this profile first)"
                 for key, path in trunk_files.items() if is_trunk_file(path) and not Path(path).is_file()]
    heads = {"perceptual.heads": cfg.perceptual.heads} if uses_distance else {}
    if evaluate:
        heads["eval.lpips_heads"] = cfg.eval.lpips_heads
        heads["eval.rlpips_heads"] = cfg.eval.rlpips_heads
    problems += [f"{key}: {path} is missing (run experiments/rlpips_metric for this profile first)"
                 for key, path in heads.items() if path and not Path(path).is_file()]
    if evaluate and cfg.eval.i3d_weights != "random" and not Path(cfg.eval.i3d_weights).is_file():
        problems.append(f"eval.i3d_weights: {cfg.eval.i3d_weights} is missing (pytorch-i3d Kinetics-400 state dict)")
    if evaluate and cfg.eval.clip_model != "random" and not Path(cfg.eval.clip_model).is_dir():
        problems.append(f"eval.clip_model: {cfg.eval.clip_model} is missing (a local CLIPModel folder)")
    return problems


def describe_datasets(cfg: ExperimentConfig) -> list[str]:
    """One line per dataset the config names (training, validation, each evaluation domain): its clip count,
    after probing every video (a corrupt one raises VideoDataError unless data.skip_bad_videos); with
    data.buckets, the training and validation sets' bucket tables."""
    from cinelora.data.videos import VideoClipDataset, training_clips

    d = cfg.data
    sets = {"train": d.train, "val": d.val, **{f"eval:{name}": s for name, s in cfg.eval.domains.items()}}
    lines = []
    for name, source in sets.items():
        if not source:
            continue
        ds = training_clips(d, source) if name in ("train", "val") else VideoClipDataset(
            source, d.height, d.width, d.num_frames, d.frame_stride, skip_bad=d.skip_bad_videos)
        skipped = f", {len(ds.skipped)} skipped" if ds.skipped else ""
        lines.append(f"{name}: {len(ds)} clips from {source}{skipped}")
        if name in ("train", "val") and d.buckets:
            counts = [ds.bucket_of.count(k) for k in range(len(ds.buckets))]
            lines += [f"  {'bucket (HxWxF)':<16} {'clips':>5}"] + [
                f"  {str(b):<16} {n:>5}" for b, n in zip(ds.buckets, counts)]
    return lines


def check_inputs(cfg: ExperimentConfig, source: str, *, train: bool, evaluate: bool) -> None:
    problems = missing_inputs(cfg, train=train, evaluate=evaluate)
    if problems:
        raise MissingInputsError(f"{source} (profile {cfg.profile}) cannot start; missing inputs:\n  - "
                                 + "\n  - ".join(problems))
