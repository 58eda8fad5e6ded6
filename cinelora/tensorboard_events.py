"""TensorBoard events of a training run through accelerate's tracker, in `runs/<experiment>/<profile>/tensorboard/`
(`tensorboard --logdir runs/` shows every run): each train_log.jsonl record's numbers, the sample strips it names,
and the resolved config as text."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from accelerate import Accelerator
from PIL import Image

from cinelora.config import ExperimentConfig, config_dict, config_hash
from cinelora.rundir import RunDir

TENSORBOARD_DIR = "tensorboard"  # under the run's state


def config_text(cfg: ExperimentConfig) -> str:
    """The resolved config as TensorBoard's text tab shows it (a code block), with its hash."""
    body = yaml.safe_dump(config_dict(cfg), sort_keys=False)
    return f"config sha256 {config_hash(cfg)}\n\n" + "".join(f"    {line}\n" for line in body.splitlines())


def tensorboard_scalars(record: dict) -> dict[str, float]:
    """A train_log.jsonl record's numbers under TensorBoard tags: val/…, optim/lr and grad_norm, speed/…, train/…"""
    groups = {"lr": "optim", "grad_norm": "optim", "s_per_step": "speed", "peak_mem_gib": "speed"}
    return {(f"val/{k[4:]}" if k.startswith("val_") else f"{groups.get(k, 'train')}/{k}"): float(v)
            for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_record(accelerator: Accelerator, run: RunDir, record: dict) -> None:
    """One log record to TensorBoard: its numbers, and the sample strips it names (main process only)."""
    if record.get("samples") and accelerator.is_main_process:
        strips = {f"samples/{Path(p).stem.split('_')[-1]}": np.asarray(Image.open(run.out / p).convert("RGB"))[None]
                  for p in record["samples"]}
        accelerator.get_tracker("tensorboard").log_images(strips, step=record["step"], dataformats="NHWC")
    accelerator.log(tensorboard_scalars(record), step=record["step"])


__all__ = ["TENSORBOARD_DIR", "config_text", "tensorboard_scalars", "log_record"]
