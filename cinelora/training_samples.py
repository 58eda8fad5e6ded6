"""Samples during training (`train.sample_clips`): at every validation, the LoRA being trained animates the first
frames of the first validation clips, with `train.sample_steps` denoising steps and the same generator per clip
each time, so strips of different steps differ only by the LoRA.

Each clip gives a frame strip (ground truth over generated, `evaluate.save_strip`) in the results folder's
`samples/train/step_<step>_clip<i>.png` and the generated clip as an mp4 in the run's state,
`runs/<experiment>/<profile>/train_samples/` (heavy at 720p: kept out of results). The style stage of a two-stage
run samples single frames from a black first frame, as it trains.
"""
from __future__ import annotations

import torch

from cinelora import models, seeding
from cinelora.config import ExperimentConfig
from cinelora.data.video_writer import write_video
from cinelora.data.videos import VideoClipDataset
from cinelora.evaluate import generate_clips, save_strip, to_uint8
from cinelora.rundir import RunDir

SAMPLE_FPS = 16  # Wan2.1's frame rate
STRIPS = "samples/train"  # under the results folder


def write_training_samples(c: models.WanComponents, cfg: ExperimentConfig, val_set: VideoClipDataset, run: RunDir,
                           step: int, *, black_condition: bool, write: bool = True) -> list[str]:
    """Generate the samples of optimizer step `step`; with `write` (the main process), write them and return the
    strips' paths relative to `run.out`. Every process of a sharded model must call it (its forward gathers)."""
    written = []
    devices = [c.transformer.device] if c.transformer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():  # training's own random streams untouched
        for i in range(min(cfg.train.sample_clips, len(val_set))):
            item = val_set[i]
            first = torch.full_like(item["condition"], -1.0) if black_condition else item["condition"]
            generator = seeding.generator(cfg.seed, "generation", i)
            clip = generate_clips(c, first[None], [item["caption"]], cfg, [generator], num_frames=item["video"].shape[1],
                                  steps=cfg.train.sample_steps)[0].float().cpu()
            if not write:
                continue
            name = f"step_{step:06d}_clip{i}"
            (run.out / STRIPS).mkdir(parents=True, exist_ok=True)
            save_strip(run.out / STRIPS / f"{name}.png", item["video"].permute(1, 0, 2, 3), clip)
            video = run.state / "train_samples" / f"{name}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            write_video(video, to_uint8(clip).permute(0, 2, 3, 1).numpy(), SAMPLE_FPS)
            written.append(f"{STRIPS}/{name}.png")
    return written


__all__ = ["SAMPLE_FPS", "STRIPS", "write_training_samples"]
