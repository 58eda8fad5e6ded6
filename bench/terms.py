"""Seconds per optimizer step of the one training loop with each optional term of the objective on or off:
flow matching only, + perceptual loss, + adversarial conditioning, + both, at one profile's sizes.

It runs `train.train` itself on the main experiment's config (`robust_lpips_r8`), so the figures are those
of real runs. The perceptual term uses the lpips package's shipped heads here (the heads' values do not
change its cost). Per variant: `steps` timed steps after one warm-up step; the last step, which also
validates, is not timed. Output: `<out>/terms_<label>.csv` (columns TERMS_COLUMNS) + provenance JSON.

    python -m bench.terms --profile smoke --label cpu
    python -m bench.terms --profile proxy --label h100
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

import torch

from bench.output import bench_parser, write_bench_files
from cinelora.config import ExperimentConfig, load_config
from cinelora.data.world import generate_world
from cinelora.rundir import RunDir
from cinelora.train import train

MAIN_CONFIG = Path("experiments/robust_lpips_r8/config.yaml")
TERMS_COLUMNS = ("device", "profile", "variant", "metric", "value")
VARIANTS = {  # variant -> (perceptual.enabled, adversarial.enabled)
    "flow": (False, False),
    "flow+perceptual": (True, False),
    "flow+adversarial": (False, True),
    "flow+perceptual+adversarial": (True, True),
}


def variant_config(cfg: ExperimentConfig, variant: str, steps: int) -> ExperimentConfig:
    perceptual, adversarial = VARIANTS[variant]
    return dataclasses.replace(
        cfg,
        perceptual=dataclasses.replace(cfg.perceptual, enabled=perceptual, heads=""),
        adversarial=dataclasses.replace(cfg.adversarial, enabled=adversarial),
        train=dataclasses.replace(cfg.train, steps=steps + 2, log_every=1, val_every=steps + 2,
                                  checkpoint_every=steps + 2, early_stop_patience=0, early_stop_metric="val_loss"),
    )


def measure_terms(profile: str, steps: int, work: Path) -> list[dict]:
    """One tidy row per (variant, statistic) of the timed steps' seconds."""
    cfg = load_config(MAIN_CONFIG, profile)
    if cfg.world.enabled:
        generate_world(cfg.world, progress=False)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    rows = []
    for variant in VARIANTS:
        out = work / variant.replace("+", "_")
        run = RunDir(out, out / "state")
        train(variant_config(cfg, variant, steps), run, progress=False)
        log = [json.loads(line) for line in run.log.read_text().splitlines()]
        seconds = [r["s_per_step"] for r in log[1:-1]]
        for metric, value in (("s_per_step_median", statistics.median(seconds)), ("s_per_step_min", min(seconds)),
                              ("s_per_step_max", max(seconds)), ("timed_steps", float(len(seconds)))):
            rows.append({"device": device, "profile": profile, "variant": variant, "metric": metric, "value": value})
    return rows


def write_terms(rows: list[dict], out: Path, label: str, seconds: float) -> Path:
    lines = [",".join(TERMS_COLUMNS)] + [
        ",".join(f"{r[c]:.6f}" if isinstance(r[c], float) else str(r[c]) for c in TERMS_COLUMNS) for r in rows]
    return write_bench_files(out, f"terms_{label}", lines, seconds, config=str(MAIN_CONFIG))


def main(argv: list[str] | None = None) -> None:
    import time

    parser = bench_parser("python -m bench.terms", __doc__, "smoke")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        rows = measure_terms(args.profile, args.steps, Path(work))
    path = write_terms(rows, args.out, args.label, time.perf_counter() - t0)
    print(path.read_text(), end="")


if __name__ == "__main__":
    main()
