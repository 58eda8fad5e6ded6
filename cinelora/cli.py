"""`python -m cinelora <command>`: the one entry point. Run scripts and the Makefile call it."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from cinelora.config import ConfigError, ExperimentConfig, MetricExperimentConfig, config_hash, config_yaml, load_config

RESULTS_ROOT = Path("results")
RUNS_ROOT = Path("runs")

EXAMPLES = {
    "data": "examples:\n  python -m cinelora data world --config experiments/lora_r8/config.yaml --profile smoke\n"
            "  python -m cinelora data check --config experiments/lora_r8/config.yaml --profile full",
    "train": "example:\n  python -m cinelora train --config experiments/lora_r8/config.yaml --profile smoke\n"
             "multi-GPU:\n  accelerate launch --config_file configs/accelerate/2gpu_ddp.yaml -m cinelora train "
             "--config experiments/lora_r8/config.yaml --profile full\n"
             "long clips, each clip's tokens split over 2 GPUs (context parallelism):\n"
             "  accelerate launch --config_file configs/accelerate/2gpu_ddp.yaml -m cinelora train "
             "--config experiments/lora_r8/config.yaml --profile full --context-parallel 2",
    "generate": "example:\n  python -m cinelora generate --config experiments/lora_r8/config.yaml --profile smoke",
    "evaluate": "example:\n  python -m cinelora evaluate --config experiments/base/config.yaml --profile smoke",
    "run": "example (world → train → evaluate → provenance):\n"
           "  python -m cinelora run --config experiments/lora_r8/config.yaml --profile smoke",
    "report": "examples:\n  python -m cinelora report table2\n  python -m cinelora report table1\n"
              "  python -m cinelora report frame-strips --out /tmp/frame_strips.pdf\n"
              "  python -m cinelora report provenance   # paper/generated/provenance.tsv: each number's source\n"
              "  python -m cinelora report metric-vs-eps",
    "rlpips-train": "example (procedural 2AFC → LPIPS and R-LPIPS heads in results/rlpips_metric/smoke):\n"
                    "  python -m cinelora rlpips-train --config experiments/rlpips_metric/config.yaml --profile smoke",
    "rlpips-eval": "example (2AFC clean/FGSM/PGD of both saved heads → metrics.csv):\n"
                   "  python -m cinelora rlpips-eval --config experiments/rlpips_metric/config.yaml --profile smoke",
}


def _paths(cfg: ExperimentConfig) -> tuple[Path, Path]:
    """(results/<experiment>/<profile>, runs/<experiment>/<profile>): committed results vs heavy state."""
    return RESULTS_ROOT / cfg.name / cfg.profile, RUNS_ROOT / cfg.name / cfg.profile


def _load(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_config(args.config, args.profile)
    if args.dry_run:
        print(config_yaml(cfg), end="")
        print(f"# sha256: {config_hash(cfg)}")
        sys.exit(0)
    return cfg


def _claim(cfg: ExperimentConfig, force: bool) -> Path:
    from cinelora import results

    out, runs = _paths(cfg)
    if force:
        shutil.rmtree(runs, ignore_errors=True)  # checkpoints and generated clips of the replaced run
    out = results.claim_run_dir(out, force)
    results.write_resolved_config(out, cfg)
    return out


def _check(cfg: ExperimentConfig, source: str, *, train: bool, evaluate: bool) -> None:
    from cinelora.preflight import MissingInputsError, check_inputs

    try:
        check_inputs(cfg, source, train=train, evaluate=evaluate)
    except MissingInputsError as err:
        raise SystemExit(str(err)) from None


def cmd_data(args: argparse.Namespace) -> None:
    cfg = _load(args)
    if args.action == "world":
        from cinelora.world import generate_world

        generate_world(cfg.world, force=args.force)
        print(f"procedural world ready under {cfg.world.root}")
        return
    from cinelora.data import VideoClipDataset

    sources = {"train": cfg.data.train, "val": cfg.data.val, **{f"eval:{d}": s for d, s in cfg.eval.domains.items()}}
    for name, source in sources.items():
        if source:
            ds = VideoClipDataset(source, cfg.data.height, cfg.data.width, cfg.data.num_frames, cfg.data.frame_stride,
                                  skip_bad=cfg.data.skip_bad_videos)
            print(f"{name}: {len(ds)} clips from {source}" + (f", {len(ds.skipped)} skipped" if ds.skipped else ""))


def _prepare_world(cfg: ExperimentConfig) -> None:
    if cfg.world.enabled:
        from cinelora.world import generate_world

        generate_world(cfg.world)


def _train(cfg: ExperimentConfig, out: Path, context_parallel: int = 1) -> dict:
    from cinelora import results
    from cinelora.train import train

    import torch
    from accelerate import PartialState

    result = train(cfg, out, _paths(cfg)[1] / "checkpoints", context_parallel=context_parallel)
    summary = {"steps": result.steps, "best_val_loss": result.best_val, "best_step": result.best_step,
               "stopped_early": result.stopped_early, "seconds": round(result.seconds, 3),
               "trainable_parameters": result.trainable_parameters, "transformer_parameters": result.total_parameters,
               "processes": PartialState(cpu=not torch.cuda.is_available()).num_processes,
               "context_parallel": result.context_parallel}
    if PartialState(cpu=not torch.cuda.is_available()).is_main_process:
        results.atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _lora_dir(cfg: ExperimentConfig, out: Path) -> Path | None:
    if not cfg.train.enabled:
        return None
    if not (out / "lora").is_dir():
        raise SystemExit(f"{out / 'lora'} is missing: train first (python -m cinelora train --config ... "
                         f"--profile {cfg.profile})")
    return out / "lora"


def _evaluate(cfg: ExperimentConfig, out: Path, phases: dict[str, float], generate_only: bool = False) -> None:
    from cinelora import provenance, results
    from cinelora.evaluate import evaluate

    t = time.perf_counter()
    rows = evaluate(cfg, _lora_dir(cfg, out), _paths(cfg)[1] / "generated", out / "samples",
                    generate_only=generate_only)
    phases["evaluate"] = time.perf_counter() - t
    if generate_only:
        return
    results.write_metrics(rows, out / "metrics.csv")
    summary = out / "train_summary.json"
    extra = {"train": json.loads(summary.read_text())} if summary.is_file() else {}
    extra["evaluators"] = {"lpips_backbone": cfg.eval.lpips_backbone, "rlpips_heads": cfg.eval.rlpips_heads,
                           "clip_model": cfg.eval.clip_model, "i3d_weights": cfg.eval.i3d_weights}
    extra["rows"] = len(rows)
    prov = provenance.collect_provenance(cfg, phase_seconds=phases, extra=extra)
    results.atomic_write_text(out / "provenance.json", json.dumps(prov, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out / 'metrics.csv'} ({len(rows)} rows) and provenance.json")


def cmd_train(args: argparse.Namespace) -> None:
    cfg = _load(args)
    if not cfg.train.enabled:
        raise SystemExit(f"{args.config}: train.enabled is false (an evaluation-only experiment)")
    _check(cfg, args.config, train=True, evaluate=False)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # under `accelerate launch`: one process claims results and writes the world
    _check_context_parallel(cfg, args.context_parallel, state.num_processes)
    with state.main_process_first():
        out = _claim(cfg, args.force) if state.is_main_process else _paths(cfg)[0]
        _prepare_world(cfg)
    summary = _train(cfg, out, args.context_parallel)
    if state.is_main_process:
        print(json.dumps(summary))


def _check_context_parallel(cfg: ExperimentConfig, degree: int, processes: int) -> None:
    """Reject a context-parallel degree that does not divide the processes, heads or tokens, before any work."""
    if degree == 1:
        return
    from cinelora.context_parallel import Layout, check_shapes
    from cinelora.models import transformer_config

    frames = [("data.num_frames", cfg.data.num_frames)]
    if cfg.train.stage == "two_stage":
        frames.append(("the style stage", 1))  # single frames
    try:
        Layout(degree, 0, processes)
        for field, n in frames:
            check_shapes(transformer_config(cfg.model.architecture), degree, n, cfg.data.height, cfg.data.width, field)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def cmd_generate(args: argparse.Namespace) -> None:
    cfg = _load(args)
    _check(cfg, args.config, train=False, evaluate=False)
    _prepare_world(cfg)
    _evaluate(cfg, _paths(cfg)[0], {}, generate_only=True)


def cmd_evaluate(args: argparse.Namespace) -> None:
    cfg = _load(args)
    out = _paths(cfg)[0]
    if (out / "metrics.csv").is_file() and not args.force:
        raise SystemExit(f"{out / 'metrics.csv'} exists; pass --force to recompute it")
    _check(cfg, args.config, train=False, evaluate=True)
    from cinelora import results

    out.mkdir(parents=True, exist_ok=True)
    results.write_resolved_config(out, cfg)
    _prepare_world(cfg)
    _evaluate(cfg, out, {})


def cmd_run(args: argparse.Namespace) -> None:
    cfg = _load(args)
    if cfg.kind == "metric":
        _run_metric(cfg, args.force)
        return
    _check(cfg, args.config, train=cfg.train.enabled, evaluate=True)
    out = _claim(cfg, args.force)
    phases: dict[str, float] = {}
    t = time.perf_counter()
    _prepare_world(cfg)
    phases["world"] = time.perf_counter() - t
    if cfg.train.enabled:
        t = time.perf_counter()
        _train(cfg, out)
        phases["train"] = time.perf_counter() - t
    _evaluate(cfg, out, phases)


# what -> (cinelora.report module, its function of (results root, output), default output); table1 and
# metric-vs-eps go through _report_metric.
REPORTS = {
    "table2": ("table2", "main", "paper/tables/table2.tex"),
    "table3": ("table3", "main", "paper/tables/table3.tex"),
    "table4": ("table4", "main", "paper/tables/table4.tex"),
    "frame-strips": ("figures", "frame_strips_main", "paper/figures/frame_strips.pdf"),
    "training-curves": ("figures", "training_curves_main", "paper/figures/training_curves.pdf"),
    "domain-bars": ("figures", "domain_bars_main", "paper/figures/domain_bars.pdf"),
    "numbers": ("numbers", "main", "paper/generated/numbers.tex"),
    "provenance": ("provenance_list", "main", "paper/generated/provenance.tsv"),
}


def cmd_report(args: argparse.Namespace) -> None:
    import importlib

    if args.what not in REPORTS:
        _report_metric(args.what, args.out)
        return
    module, function, default = REPORTS[args.what]
    getattr(importlib.import_module(f"cinelora.report.{module}"), function)(RESULTS_ROOT, Path(args.out or default))


# --- metric experiments (kind: metric): R-LPIPS heads, 2AFC robustness, Table 1 and its figure -------------


def _metric_config(args: argparse.Namespace) -> MetricExperimentConfig:
    cfg = _load(args)
    if cfg.kind != "metric":
        raise SystemExit(f"{args.config}: kind is {cfg.kind!r}; rlpips-train/rlpips-eval take a `kind: metric` config")
    return cfg


def _run_metric(cfg: MetricExperimentConfig, force: bool) -> None:
    from cinelora.rlpips import run_metric_experiment

    out = _claim(cfg, force)
    rows = run_metric_experiment(cfg, out)
    print(f"wrote {out / 'metrics.csv'} ({len(rows)} rows) and provenance.json")


def cmd_rlpips_train(args: argparse.Namespace) -> None:
    from cinelora.rlpips import prepare_data, train_metric_heads

    cfg = _metric_config(args)
    out = _claim(cfg, args.force)
    prepare_data(cfg)
    print(json.dumps(train_metric_heads(cfg, out)))


def cmd_rlpips_eval(args: argparse.Namespace) -> None:
    from cinelora import results
    from cinelora.rlpips import HEADS, evaluate_metric_heads, prepare_data, write_metric_results

    cfg = _metric_config(args)
    out = _paths(cfg)[0]
    if (out / results.FINISHED_MARKER).exists() and not args.force:
        raise SystemExit(f"{out} holds a finished evaluation; pass --force to recompute its metrics.csv")
    missing = [name for name in HEADS.values() if not (out / name).is_file()]
    if missing:
        raise SystemExit(f"{out}: heads {missing} are missing: train first (python -m cinelora rlpips-train "
                         f"--config {args.config} --profile {cfg.profile})")
    results.write_resolved_config(out, cfg)
    start = time.perf_counter()
    prepare_data(cfg)
    rows = evaluate_metric_heads(cfg, out)
    write_metric_results(cfg, out, rows, {"evaluate": time.perf_counter() - start})
    print(f"wrote {out / 'metrics.csv'} ({len(rows)} rows) and provenance.json")


def _report_metric(what: str, out: str | None) -> None:
    if what == "table1":
        from cinelora.report import table1

        table1.main(RESULTS_ROOT, Path(out or "paper/tables/table1.tex"))
    else:
        from cinelora.report import figures_metric

        figures_metric.main(RESULTS_ROOT, Path(out or "paper/figures/metric_vs_eps.pdf"))


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiments/<name>/config.yaml")
    p.add_argument("--profile", default="smoke", choices=("full", "proxy", "smoke"), help="scale profile")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and its sha256, then exit")
    p.add_argument("--force", action="store_true", help="replace finished results instead of refusing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cinelora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("data", "build the procedural world, or check every dataset a config names", cmd_data)
    p.add_argument("action", choices=("world", "check"))
    _experiment_args(p)
    p = add("train", "train (or resume) the experiment's LoRA", cmd_train)
    _experiment_args(p)
    p.add_argument("--context-parallel", type=int, default=1, metavar="C",
                   help="split each clip's video tokens over groups of C processes (diffusers' Ulysses attention; "
                        "C divides the processes, the heads and the tokens; GPUs only); default 1: none")
    _experiment_args(add("generate", "generate (and cache) clips for every evaluation domain", cmd_generate))
    _experiment_args(add("evaluate", "score generated clips against ground truth → metrics.csv", cmd_evaluate))
    _experiment_args(add("run", "the whole experiment: world → train → evaluate → provenance", cmd_run))
    _experiment_args(add("rlpips-train", "train LPIPS (natural) and R-LPIPS (adversarial) heads on 2AFC data",
                         cmd_rlpips_train))
    _experiment_args(add("rlpips-eval", "2AFC robustness of both saved heads (clean, FGSM, PGD) → metrics.csv",
                         cmd_rlpips_eval))
    from cinelora import bench

    EXAMPLES["bench"] = bench.EXAMPLES
    bench.add_arguments(add("bench", "time the true-size LoRA step, attention kernels and configuration time "
                                     "-> results/bench/", bench.run))
    p = add("report", "turn results/ into paper tables and figures", cmd_report)
    p.add_argument("what", choices=("table1", *REPORTS, "metric-vs-eps"))
    p.add_argument("--out", help="output file (default paper/tables/<what>.tex, paper/figures/<what, - as _>.pdf "
                                 "with a PNG copy, paper/generated/{numbers.tex,provenance.tsv})")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "report":  # reads results/ only: `make table2` must not wait for the model stack below
        args.func(args)
        return
    from cinelora.data import VideoDataError
    from cinelora.metrics.lpips_distance import MissingWeightsError
    from cinelora.models import ModelSourceError
    from cinelora.results import ResultsExistError
    from cinelora.speed import configure_cuda_allocator
    from cinelora.train import NonFiniteLossError

    configure_cuda_allocator()
    try:
        args.func(args)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    except (ResultsExistError, MissingWeightsError, ModelSourceError, VideoDataError, NonFiniteLossError) as err:
        raise SystemExit(f"{type(err).__name__}: {err}") from None
