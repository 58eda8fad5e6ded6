"""The proxy loop's speed, the figures the study's budget rests on: the latent cache's seconds per clip (the seed's
"configuration time"), batched generation (clips per second at `eval.batch_size`, the profile's clip size and
sampler), and one experiment-seed of `robust_lpips_r8` end to end (world, training, evaluation of every domain,
clean and attacked), with the wall time of each phase from the run's provenance.

Targets (issue 15, one H200 at proxy): generation >= 100 clips/s; one experiment-seed <= 60 s.

    python -m bench.proxy_loop --profile proxy --label h200
    python -m bench.proxy_loop --profile smoke --label cpu --skip-experiment
Output: `<out>/proxy_loop_<label>.csv` (columns COLUMNS) + `<out>/proxy_loop_<label>.json` (provenance).
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cinelora import models, seeding
from bench.output import bench_parser, write_bench_files
from cinelora.config import ExperimentConfig, load_config
from cinelora.data.videos import VideoClipDataset
from cinelora.evaluate import generate_clips
from cinelora.latent_cache import cache_dataset
from cinelora.runner import prepare_world, run_experiment
from cinelora.rundir import use_results_root

MAIN_CONFIG = Path("experiments/robust_lpips_r8/config.yaml")
COLUMNS = ("device", "profile", "frames", "height", "width", "figure", "value", "unit")


def generation_rate(cfg: ExperimentConfig, repeats: int = 3) -> dict[str, float]:
    """Clips per second of `evaluate.generate_clips` at eval.batch_size (median of `repeats` timed batches after
    one warm-up), from the first frames of the held-in domain's test clips."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    c = models.build_components(cfg.model, device=device, seed=cfg.seed)
    data = VideoClipDataset(next(iter(cfg.eval.domains.values())), cfg.data.height, cfg.data.width,
                            cfg.data.num_frames, cfg.data.frame_stride)
    size = cfg.eval.batch_size
    items = [data[i % len(data)] for i in range(size)]
    firsts, captions = torch.stack([it["condition"] for it in items]), [it["caption"] for it in items]
    seconds = []
    for repeat in range(repeats + 1):
        generators = [seeding.generator(cfg.seed, "generation", repeat * size + i) for i in range(size)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            generate_clips(c, firsts, captions, cfg, generators)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds[1:])
    return {"generation_batch": float(size), "generation_s_per_batch": median, "generation_clips_per_s": size / median}


def cache_rate(cfg: ExperimentConfig, root: Path) -> dict[str, float]:
    """Seconds per clip of filling an empty latent cache with the training clips (`cinelora cache`)."""
    summary = cache_dataset(cfg, root, progress=False)
    return {"cache_clips": float(summary["encoded"]), "cache_s_per_clip": summary["seconds_per_encoded_clip"],
            "cache_model_load_s": summary["seconds_model_load"]}


def experiment_seconds(cfg: ExperimentConfig, results: Path) -> dict[str, float]:
    """Wall seconds of one experiment-seed run into `results` (phases from its provenance, and in all)."""
    use_results_root(results)
    run_experiment(cfg, str(MAIN_CONFIG), force=True)
    wall = json.loads((results / cfg.name / cfg.profile / "provenance.json").read_text())["wall_seconds"]
    return {f"experiment_{phase}_s": float(s) for phase, s in wall["phases"].items()} | {
        "experiment_total_s": float(wall["total"])}


UNITS = {"generation_batch": "clips", "generation_s_per_batch": "s", "generation_clips_per_s": "clips/s",
         "cache_clips": "clips", "cache_s_per_clip": "s", "cache_model_load_s": "s"}


def write_figures(figures: dict[str, float], cfg: ExperimentConfig, out: Path, label: str, seconds: float) -> Path:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    clip = f"{cfg.data.num_frames},{cfg.data.height},{cfg.data.width}"
    lines = [",".join(COLUMNS)] + [f"{device},{cfg.profile},{clip},{name},{value:.6f},{UNITS.get(name, 's')}"
                                   for name, value in figures.items()]
    return write_bench_files(out, f"proxy_loop_{label}", lines, seconds, config=str(MAIN_CONFIG), profile=cfg.profile)


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("python -m bench.proxy_loop", __doc__, "proxy")
    parser.add_argument("--skip-experiment", action="store_true", help="time the cache and generation only")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cfg = load_config(MAIN_CONFIG, args.profile)
    prepare_world(cfg)
    with tempfile.TemporaryDirectory() as work:
        figures = cache_rate(cfg, Path(work) / "cache") | generation_rate(cfg)
        if not args.skip_experiment:
            figures |= experiment_seconds(cfg, Path(work) / "results")
    path = write_figures(figures, cfg, args.out, args.label, time.perf_counter() - t0)
    print(path.read_text(), end="")


if __name__ == "__main__":
    main()
