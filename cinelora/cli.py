"""`python -m cinelora <command>`: the one entry point. It parses arguments, resolves the config and hands
the work to `cinelora.runner` (experiments) or `cinelora.report` (paper outputs); run scripts and the
Makefile call it. Benchmarks have their own entry point, `python -m bench`."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import sys
from pathlib import Path

from cinelora.config import PROFILES, ConfigError, config_hash, config_yaml, load_config

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
    "cache": "example (encode the training clips once; every experiment on the same clips and encoders reuses them):\n"
             "  python -m cinelora cache --config experiments/lora_r8/config.yaml --profile smoke",
    "evaluate": "example:\n  python -m cinelora evaluate --config experiments/base/config.yaml --profile smoke",
    "run": "examples (world → train → evaluate → provenance):\n"
           "  python -m cinelora run --config experiments/lora_r8/config.yaml --profile smoke\n"
           "  python -m cinelora run --config experiments/lora_r8/config.yaml --profile full --hardware h200-141gb "
           "--dry-run\n"
           "  python -m cinelora run --config experiments/proxy_base/config.yaml --profile proxy --budget-minutes 8.5\n"
           "  python -m cinelora run --config experiments/proxy_search/config.yaml --profile proxy --budget-minutes 8.5"
           "   # lr, steps, λ, ε on validation clips",
    "report": "examples:\n  python -m cinelora report table2\n  python -m cinelora report table1\n"
              "  python -m cinelora report frame-strips --out /tmp/frame_strips.pdf\n"
              "  python -m cinelora report provenance   # paper/generated/provenance.tsv: each number's source\n"
              "  python -m cinelora report performance  # docs/performance.md from results/bench/",
    "rlpips-train": "example (procedural 2AFC → LPIPS and R-LPIPS heads in results/rlpips_metric/smoke):\n"
                    "  python -m cinelora rlpips-train --config experiments/rlpips_metric/config.yaml --profile smoke",
    "lora": "example (the Wan-layout file ComfyUI loads, beside a LoRA folder's diffusers-format file):\n"
            "  python -m cinelora lora convert results/lora_r8/smoke/lora",
    "rlpips-eval": "example (2AFC clean/FGSM/PGD of both saved heads → metrics.csv):\n"
                   "  python -m cinelora rlpips-eval --config experiments/rlpips_metric/config.yaml --profile smoke",
}

# what -> (cinelora.report module, its function of (results root, output), default output)
REPORTS = {
    "table1": ("table1", "main", "paper/tables/table1.tex"),
    "table2": ("table2", "main", "paper/tables/table2.tex"),
    "table3": ("table3", "main", "paper/tables/table3.tex"),
    "table4": ("table4", "main", "paper/tables/table4.tex"),
    "main-comparison": ("main_comparison", "main", "paper/tables/main_comparison.tex"),
    "metric-vs-eps": ("figures_metric", "main", "paper/figures/metric_vs_eps.pdf"),
    "frame-strips": ("figures", "frame_strips_main", "paper/figures/frame_strips.pdf"),
    "training-curves": ("figures", "training_curves_main", "paper/figures/training_curves.pdf"),
    "domain-bars": ("figures", "domain_bars_main", "paper/figures/domain_bars.pdf"),
    "numbers": ("numbers", "main", "paper/generated/numbers.tex"),
    "provenance": ("provenance_list", "main", "paper/generated/provenance.tsv"),
    "performance": ("performance", "main", "docs/performance.md"),
    "gallery": ("gallery", "main", "gallery/index.html"),
}
# which commands take which kind of experiment config
KINDS = {"data": "generator", "cache": "generator", "train": "generator", "generate": "generator", "evaluate": "generator",
         "rlpips-train": "metric", "rlpips-eval": "metric"}


def _dispatch(args: argparse.Namespace, cfg) -> None:
    from cinelora import runner

    source, force = args.config, args.force
    if args.command == "data":
        _data(args.action, cfg, force)
    elif args.command == "train":
        summary = runner.train_generator(cfg, source, force, args.context_parallel)
        if summary is not None:
            print(json.dumps(summary))
    elif args.command == "cache":
        print(json.dumps(runner.cache_training_clips(cfg)))
    elif args.command == "generate":
        runner.generate(cfg, source)
    elif args.command == "evaluate":
        runner.evaluate_generator(cfg, source, force)
    elif args.command == "run":
        from cinelora.rundir import RunDir

        if args.skip_finished and RunDir.of(cfg).finished:
            print(f"{cfg.name} seed {cfg.seed}: finished ({RunDir.of(cfg).out}), kept")
            return
        runner.run_experiment(cfg, source, force, args.budget_minutes)
    elif args.command == "rlpips-train":
        print(json.dumps(runner.train_metric(cfg, force)))
    elif args.command == "rlpips-eval":
        runner.evaluate_metric(cfg, source, force)


def _data(action: str, cfg, force: bool) -> None:
    if action == "world":
        from cinelora.data.world import generate_world

        generate_world(cfg.world, force=force)
        print(f"procedural world ready under {cfg.world.root}")
    else:
        from cinelora.preflight import describe_datasets

        print("\n".join(describe_datasets(cfg)))


def _report(what: str, out: str | None) -> None:
    from cinelora.rundir import RESULTS_ROOT

    module, function, default = REPORTS[what]
    getattr(importlib.import_module(f"cinelora.report.{module}"), function)(RESULTS_ROOT, Path(out or default))


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiments/<name>/config.yaml")
    p.add_argument("--profile", default="smoke", choices=PROFILES, help="scale profile (default: smoke)")
    p.add_argument("--hardware", default=None, metavar="PRESET",
                   help="with --profile full: the speed levers of configs/hardware/PRESET.yaml (default h100-80gb; "
                        "h200-141gb for 141 GB GPUs)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and its sha256, then exit")
    p.add_argument("--force", action="store_true", help="replace finished results instead of refusing")
    p.add_argument("--seed", type=int, default=None, metavar="K",
                   help="generator experiments: run with seed K instead of the config's (LoRA init, data order, "
                        "noise, generation); K > 0 writes to <profile>/seed<K> (a study's further seeds)")
    p.add_argument("--results-root", default="results", metavar="DIR",
                   help="write the run to DIR/<experiment>/<profile> (state in DIR/.runs) instead of results/, and "
                        "compare its metrics with the committed ones (default: results)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cinelora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("data", "build the procedural world, or check every dataset a config names")
    p.add_argument("action", choices=("world", "check"))
    _experiment_args(p)
    p = add("train", "train (or resume) the experiment's LoRA")
    _experiment_args(p)
    p.add_argument("--context-parallel", type=int, default=1, metavar="C",
                   help="split each clip's video tokens over groups of C processes (diffusers' Ulysses attention; "
                        "C divides the processes, the heads and the tokens; GPUs only); default 1: none")
    _experiment_args(add("cache", "encode the training clips (VAE latents, T5 and CLIP embeddings) into runs/cache"))
    _experiment_args(add("generate", "generate (and cache) clips for every evaluation domain"))
    _experiment_args(add("evaluate", "score generated clips against ground truth → metrics.csv"))
    p = add("run", "the whole experiment: world → train → evaluate → provenance")
    _experiment_args(p)
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="instrument experiments (proxy_base): stop after M minutes with a checkpoint; search "
                        "experiments (proxy_search): start no grid point that would end past M minutes; the same "
                        "command continues")
    p.add_argument("--skip-finished", action="store_true",
                   help="a finished run is kept and said so (exit 0) instead of refused: `make proxy-study` resumes")
    _experiment_args(add("rlpips-train", "train LPIPS (natural) and R-LPIPS (adversarial) heads on 2AFC data"))
    _experiment_args(add("rlpips-eval", "2AFC robustness of both saved heads (clean, FGSM, PGD) → metrics.csv"))
    p = add("lora", "write a LoRA in the original Wan key layout (ComfyUI, Wan's code) → lora_wan.safetensors")
    p.add_argument("action", choices=("convert",))
    p.add_argument("source", help="a LoRA folder (holding pytorch_lora_weights.safetensors) or a diffusers-format file")
    p.add_argument("--out", help="output file (default: lora_wan.safetensors beside the source file)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p = add("report", "turn results/ into paper tables and figures (and docs/performance.md)")
    p.add_argument("what", choices=REPORTS)
    p.add_argument("--out", help="output file (default: " + ", ".join(sorted({d for *_, d in REPORTS.values()})) + ")")
    return parser


def _load(args: argparse.Namespace):
    """The resolved config (`--dry-run`: printed, then exit), of the kind the command takes."""
    try:
        cfg = load_config(args.config, args.profile, args.hardware)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    if args.seed is not None:
        if cfg.kind != "generator":
            raise SystemExit(f"--seed: {args.config} is kind {cfg.kind!r}; only generator experiments take --seed")
        if args.seed < 0:
            raise SystemExit(f"--seed {args.seed}: expected a seed >= 0")
        cfg = dataclasses.replace(cfg, seed=args.seed)
    if args.dry_run:
        print(config_yaml(cfg), end="")
        print(f"# sha256: {config_hash(cfg)}")
        sys.exit(0)
    wanted = KINDS.get(args.command)
    if wanted and cfg.kind != wanted:
        raise SystemExit(f"{args.config}: kind is {cfg.kind!r}; `{args.command}` takes a `kind: {wanted}` config")
    return cfg


# a folder that cannot take what a run writes: said in one line naming the path, not as a traceback
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except OSError as err:
        if err.errno not in _UNWRITABLE:
            raise
        raise SystemExit(f"cannot write {err.filename}: {err.strerror}") from None


def _main(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "report":  # reads results/ only: `make table2` must not wait for the model stack
        _report(args.what, args.out)
        return
    if args.command == "lora":
        from cinelora.lora_wan_layout import LoraLayoutError, export_wan_layout

        try:
            print(f"wrote {export_wan_layout(args.source, args.out, args.force)}")
        except (LoraLayoutError, FileNotFoundError, FileExistsError) as err:
            raise SystemExit(str(err)) from None
        return
    cfg = _load(args)  # before anything heavy is imported: `--dry-run` and config errors answer at once
    from cinelora.data.videos import VideoDataError
    from cinelora.metrics.lpips_distance import MissingWeightsError
    from cinelora.models import ModelSourceError
    from cinelora.preflight import MissingInputsError
    from cinelora.provenance import git_sha
    from cinelora.rundir import ConfigChangedError, ResultsExistError, RunLockedError, use_results_root
    from cinelora.runner import RunError
    from cinelora.speed.levers import configure_cuda_allocator
    from cinelora.train import NonFiniteLossError

    try:
        git_sha()  # a malformed CINELORA_GIT_SHA is refused now, not after the run, when provenance is written
    except ValueError as err:
        raise SystemExit(str(err)) from None
    configure_cuda_allocator()
    use_results_root(args.results_root)
    try:
        _dispatch(args, cfg)
    except (MissingInputsError, RunError, ConfigChangedError, RunLockedError) as err:
        raise SystemExit(str(err)) from None
    except (ResultsExistError, MissingWeightsError, ModelSourceError, VideoDataError, NonFiniteLossError) as err:
        raise SystemExit(f"{type(err).__name__}: {err}") from None
