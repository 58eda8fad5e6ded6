"""Seconds per step of the proxy base model's VAE phase (experiments/proxy_base), by batch size, LPIPS frames per
clip, cuDNN autotuning and torch.compile mode: what sets how many steps of the VAE recipe fit one device session.

The step is the phase's own (`base_model.vae_step_loss`: encode, sample, decode, L1 + KL + LPIPS, backward,
gradient clipping, AdamW), on a corpus of `--clips` clips of the config's size; the median of `--steps` timed
steps after `--warmup` untimed ones (`first_step_s`: the first of them, which includes compiling).

    python -m bench.vae_step --profile proxy --label h200
    python -m bench.vae_step --profile smoke --label cpu --steps 2 --warmup 1
    python -m bench.vae_step --profile proxy --label h200-compile --variants 0,7,8
    python -m bench.vae_step --profile proxy --label h200-layout --variants 0,9,10,11,6
Output: `<out>/vae_step_<label>.csv` (columns COLUMNS) + `<out>/vae_step_<label>.json` (provenance).
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.output import bench_parser, write_bench_files
from cinelora import models, seeding
from cinelora.config import BaseModelConfig, ModelConfig, load_config
from cinelora.instrument.base_model import check_evaluators, load_data, vae_step_loss
from cinelora.instrument.loop import training_device

CONFIG = Path("experiments/proxy_base/config.yaml")
COLUMNS = ("device", "profile", "frames", "height", "width", "batch", "perceptual_weight", "perceptual_frames",
           "cudnn_benchmark", "compile", "channels_last", "first_step_s", "s_per_step", "clips_per_s")
# (batch, perceptual_weight, perceptual_frames, cudnn_benchmark, compile, channels_last): the recipe's point, one
# lever at a time
VARIANTS = ((64, 0.1, 0, False, "", False), (64, 0.0, 0, False, "", False), (64, 0.1, 1, False, "", False),
            (64, 0.1, 4, False, "", False), (32, 0.1, 0, False, "", False), (128, 0.1, 0, False, "", False),
            (64, 0.1, 0, True, "", False), (64, 0.1, 0, False, "default", False),
            (64, 0.1, 0, False, "reduce-overhead", False), (64, 0.1, 0, False, "", True), (64, 0.1, 0, True, "", True),
            (128, 0.1, 0, True, "", True))


def seconds_per_step(cfg: BaseModelConfig, data, warmup: int, steps: int) -> tuple[float, float]:
    """(the first step's seconds, the median of the timed steps')."""
    device = data.train.device
    c = models.build_components(ModelConfig(source="random", architecture=cfg.model.architecture,
                                            weight_dtype=cfg.model.weight_dtype), device, cfg.seed)
    vae = c.vae.float().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae.lr, weight_decay=cfg.vae.weight_decay)
    step_loss, times = vae_step_loss(cfg, vae, data), []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss, _ = step_loss(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.vae.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[warmup:])


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("python -m bench.vae_step", __doc__, "proxy")
    parser.add_argument("--clips", type=int, default=1024, help="corpus clips to draw batches from")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", default=",".join(map(str, range(len(VARIANTS)))),
                        help="comma-separated indices into VARIANTS (default: all)")
    args = parser.parse_args(argv)
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")]
    t0 = time.perf_counter()
    cfg = load_config(CONFIG, args.profile)
    check_evaluators(cfg)
    cfg = dataclasses.replace(cfg, corpus=dataclasses.replace(cfg.corpus, train_clips=args.clips, val_clips=64))
    seeding.seed_everything(cfg.seed)
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    clip = f"{cfg.corpus.num_frames},{cfg.corpus.height},{cfg.corpus.width}"
    lines, autotune_before = [",".join(COLUMNS)], torch.backends.cudnn.benchmark
    with tempfile.TemporaryDirectory() as cache:
        data = load_data(cfg, training_device(), False, Path(cache))
        for batch, weight, frames, autotune, mode, channels_last in chosen:
            torch.backends.cudnn.benchmark = autotune
            phase = dataclasses.replace(cfg.vae, batch_size=batch, perceptual_weight=weight, perceptual_frames=frames,
                                        compile=mode, channels_last=channels_last)
            ran = mode if mode and data.train.device.type == "cuda" else "eager"  # a CPU runs eager
            first, s = seconds_per_step(dataclasses.replace(cfg, vae=phase), data, args.warmup, args.steps)
            lines.append(f"{device_name},{cfg.profile},{clip},{batch},{weight},{frames},{int(autotune)},{ran},"
                         f"{int(channels_last)},{first:.3f},{s:.5f},{batch / s:.1f}")
            print(lines[-1], flush=True)
    torch.backends.cudnn.benchmark = autotune_before
    write_bench_files(args.out, f"vae_step_{args.label}", lines, time.perf_counter() - t0, config=str(CONFIG),
                      profile=cfg.profile)


if __name__ == "__main__":
    main()
