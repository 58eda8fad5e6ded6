"""The experiments, phase by phase, for both kinds: `cinelora train|generate|evaluate|run|rlpips-train|rlpips-eval`
as functions of a resolved config. They write only through `RunDir` (`cinelora.rundir`), which owns the run's
folders; the CLI parses arguments and calls these.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

from cinelora.atomic import atomic_write_text, remove_temporaries
from cinelora.data.buckets import Bucket, parse_bucket
from cinelora.config import (INSTRUMENT_KINDS, BaseModelConfig, EvaluatorsConfig, ExperimentConfig,
                             MetricExperimentConfig, SearchConfig, config_hash, load_config, stage_experiment)
from cinelora.rundir import FINISHED_MARKER, ResultsExistError, RunDir, check_same_config, claim, locked


class RunError(RuntimeError):
    """A run cannot start (or go on): what it needs is missing or does not fit; the message says which."""


def _one_at_a_time(work: Callable) -> Callable:
    """Run `work(cfg, ...)` holding the run's lock (`rundir.locked`): a second run of the same experiment and
    profile stops at once. Under `accelerate launch` the main process holds it for the whole launch."""

    @functools.wraps(work)
    def exclusive(cfg, *args, **kwargs):
        import torch
        from accelerate import PartialState

        main = PartialState(cpu=not torch.cuda.is_available()).is_main_process
        with locked(cfg) if main else contextlib.nullcontext():
            return work(cfg, *args, **kwargs)

    return exclusive


def _reopen(run: RunDir, force: bool, what: str) -> None:
    """Before recomputing `what` of a run: a finished run is refused without `force`; with it, the run is marked
    unfinished first (its provenance.json goes), so a recomputation killed midway never passes for finished."""
    if run.finished and not force:
        raise ResultsExistError(f"{run.out} holds a finished run; pass --force to recompute its {what}, or "
                                "--results-root DIR to rerun it beside it (compared with these results)")
    (run.out / FINISHED_MARKER).unlink(missing_ok=True)


class _Phases(dict):
    """Wall seconds per phase, as provenance records them."""

    def time(self, name: str, work: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = work()
        self[name] = time.perf_counter() - start
        return result


# --- generator experiments (kind: generator) ----------------------------------------------------------------


def _preflight(cfg: ExperimentConfig, source: str, *, train: bool, evaluate: bool) -> None:
    from cinelora.preflight import check_inputs

    check_inputs(cfg, source, train=train, evaluate=evaluate)


def prepare_world(cfg: ExperimentConfig | MetricExperimentConfig) -> None:
    """Write the procedural world the config reads (kept when current), for the profiles that use it."""
    if cfg.world.enabled:
        from cinelora.data.world import generate_world

        generate_world(cfg.world)


def _train(cfg: ExperimentConfig, run: RunDir, context_parallel: int = 1) -> dict:
    """Train (or resume) the LoRA; `train_summary.json` on the main process; returns the summary."""
    import torch
    from accelerate import PartialState

    from cinelora.train import train

    result = train(cfg, run, context_parallel=context_parallel)
    state = PartialState(cpu=not torch.cuda.is_available())
    summary = {"steps": result.steps, "val_metric": result.val_metric, "best_val": result.best_val,
               "best_step": result.best_step,
               "stopped_early": result.stopped_early, "seconds": round(result.seconds, 3),
               "trainable_parameters": result.trainable_parameters, "transformer_parameters": result.total_parameters,
               "processes": state.num_processes, "context_parallel": result.context_parallel}
    if state.is_main_process:
        atomic_write_text(run.out / "train_summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _trained_lora(cfg: ExperimentConfig, run: RunDir) -> Path | None:
    if not cfg.train.enabled:
        return None
    if not run.lora.is_dir():
        raise RunError(f"{run.lora} is missing: train first (python -m cinelora train --config ... "
                                f"--profile {cfg.profile})")
    return run.lora


def _evaluate(cfg: ExperimentConfig, run: RunDir, phases: _Phases, generate_only: bool = False) -> None:
    from cinelora.evaluate import evaluate

    rows = phases.time("evaluate", lambda: evaluate(cfg, _trained_lora(cfg, run), run.generated, run.samples,
                                                    generate_only=generate_only))
    if generate_only:
        return
    run.write_metrics(rows)
    extra = {"train": run.read_json("train_summary.json")} if (run.out / "train_summary.json").is_file() else {}
    extra["evaluators"] = {"lpips_backbone": cfg.eval.lpips_backbone, "lpips_heads": cfg.eval.lpips_heads,
                           "rlpips_heads": cfg.eval.rlpips_heads,
                           "clip_model": cfg.eval.clip_model, "i3d_weights": cfg.eval.i3d_weights,
                           "fvd": {"i3d_release": cfg.eval.i3d_release if cfg.eval.i3d_weights != "random" else
                                   "none (seeded random I3D)", "covariance": cfg.eval.fvd_covariance,
                                   "resize": "bilinear, half-pixel centres (TF2 tf.image.resize), no antialiasing",
                                   "frames": "16, evenly strided from frame 0"}}
    extra["rows"] = len(rows)
    run = run.finish(cfg, phases, extra)
    print(f"wrote {run.metrics} ({len(rows)} rows) and {FINISHED_MARKER}")
    _where(cfg, run)
    _compare_with_committed(run)


def _compare_with_committed(run: RunDir) -> None:
    """A run beside the committed results (`--results-root`): how its metrics compare with the committed ones."""
    committed = run.committed / "metrics.csv" if run.committed is not None else None
    if committed is None or not committed.is_file():
        return
    from cinelora.results import KEY_COLUMNS, read_metrics

    keys = list(KEY_COLUMNS[1:])  # the same run: experiment and profile agree by construction
    both = read_metrics([run.metrics]).merge(read_metrics([committed]), on=["experiment", *keys], how="outer",
                                             suffixes=("", "_committed"), indicator=True)
    shared = both[both["_merge"] == "both"]
    differ = shared[shared["value"] != shared["value_committed"]]
    unmatched = int((both["_merge"] != "both").sum())
    if differ.empty and not unmatched:
        print(f"  compared with {committed}: all {len(shared)} values identical")
        return
    worst = float((differ["value"] - differ["value_committed"]).abs().max()) if len(differ) else 0.0
    print(f"  compared with {committed}: {len(differ)} of {len(shared)} values differ (largest |difference| "
          f"{worst:.6f}); {unmatched} rows in only one of the two")


def _where(cfg: ExperimentConfig, run: RunDir) -> None:
    """The closing summary: where each part of the run went."""
    parts = {"metrics": run.metrics, "samples": run.samples, "provenance": run.out / FINISHED_MARKER}
    if cfg.train.enabled:
        parts = {"LoRA": run.lora, "training log": run.log, **parts, "checkpoints": run.checkpoints}
    print("\n".join(f"  {name + ':':<13} {path}" for name, path in parts.items() if path.exists()))


def _probe_evaluation_videos(cfg: ExperimentConfig) -> None:
    """Open every evaluation domain's videos as evaluation will (VideoDataError naming a bad file, unless
    data.skip_bad_videos)."""
    from cinelora.data.videos import VideoClipDataset

    for source in cfg.eval.domains.values():
        VideoClipDataset(source, cfg.data.height, cfg.data.width, cfg.data.num_frames, cfg.data.frame_stride,
                         skip_bad=cfg.data.skip_bad_videos)


def _check_context_parallel(cfg: ExperimentConfig, degree: int, processes: int) -> None:
    """A context-parallel degree must divide the processes, the heads and every clip's tokens (the style stage's
    single frames too): checked before any work."""
    if degree == 1:
        return
    from cinelora.models import transformer_config
    from cinelora.speed.context_parallel import Layout, check_shapes

    d = cfg.data
    sizes = [(f"data.buckets {b}", parse_bucket(b)) for b in d.buckets] or [
        ("data.num_frames", Bucket(d.height, d.width, d.num_frames))]
    if cfg.train.stage == "two_stage":
        sizes += [(f"the style stage of {field}", dataclasses.replace(b, num_frames=1)) for field, b in sizes]
    try:
        Layout(degree, 0, processes)
        for field, b in sizes:
            check_shapes(transformer_config(cfg.model.architecture), degree, b.num_frames, b.height, b.width, field)
    except ValueError as err:
        raise RunError(str(err)) from None


@_one_at_a_time
def train_generator(cfg: ExperimentConfig, source: str, force: bool, context_parallel: int = 1) -> dict | None:
    """`cinelora train`: claim, world, train; the training summary (None on processes other than the main one:
    under `accelerate launch` the main process claims the folders and writes the world while the others wait)."""
    import torch
    from accelerate import PartialState

    if not cfg.train.enabled:
        raise RunError(f"{source}: train.enabled is false (an evaluation-only experiment)")
    _preflight(cfg, source, train=True, evaluate=False)
    state = PartialState(cpu=not torch.cuda.is_available())
    _check_context_parallel(cfg, context_parallel, state.num_processes)
    with state.main_process_first():
        run = claim(cfg, force) if state.is_main_process else RunDir.of(cfg)
        prepare_world(cfg)
    summary = _train(cfg, run, context_parallel)
    return summary if state.is_main_process else None


def cache_training_clips(cfg: ExperimentConfig) -> dict:
    """`cinelora cache`: the training clips' encodings into the disk store every run of these clips reads."""
    from cinelora.latent_cache import cache_dataset
    from cinelora.rundir import cache_root

    prepare_world(cfg)
    return cache_dataset(cfg, cache_root())


@_one_at_a_time
def generate(cfg: ExperimentConfig, source: str) -> None:
    """`cinelora generate`: generate (and cache) every evaluation clip, nothing scored."""
    _preflight(cfg, source, train=False, evaluate=False)
    prepare_world(cfg)
    _evaluate(cfg, RunDir.of(cfg), _Phases(), generate_only=True)


@_one_at_a_time
def evaluate_generator(cfg: ExperimentConfig, source: str, force: bool) -> None:
    """`cinelora evaluate`: score (a trained run's LoRA, or the base model) → metrics.csv, provenance."""
    run = RunDir.of(cfg)
    _preflight(cfg, source, train=False, evaluate=True)
    _reopen(run, force, "metrics.csv")
    if not force:
        check_same_config(run, cfg)  # the LoRA it scores was trained with the config recorded there
    run.out.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    prepare_world(cfg)
    _evaluate(cfg, run, _Phases())


@_one_at_a_time
def run_generator(cfg: ExperimentConfig, source: str, force: bool) -> None:
    """`cinelora run` of a generator experiment: world → train → evaluate → provenance."""
    _preflight(cfg, source, train=cfg.train.enabled, evaluate=True)
    run = claim(cfg, force)
    phases = _Phases()
    phases.time("world", lambda: prepare_world(cfg))
    if cfg.train.enabled:
        _probe_evaluation_videos(cfg)  # a corrupt test clip must stop the run now, not after the training
        phases.time("train", lambda: _train(cfg, run))
    _evaluate(cfg, run, phases)


# --- metric experiments (kind: metric): LPIPS and R-LPIPS heads, 2AFC robustness ------------------------------


def _metric_heads(cfg: MetricExperimentConfig, run: RunDir) -> None:
    from cinelora.metrics import rlpips

    summary = run.read_json(rlpips.TRAIN_SUMMARY) or {}
    for key, adversarial in rlpips.ADVERSARIAL.items():
        if (run.out / rlpips.HEADS[key]).is_file() and key in summary:
            continue  # trained before this run was interrupted: kept
        checkpoints = run.state / f"heads_{key}_checkpoints"
        done = rlpips.checkpoint_epoch(checkpoints)  # a killed run goes on from its last whole epoch
        run.keep_log(lambda record: record.get("heads") != key or record["epoch"] <= done)
        summary[key] = rlpips.train_metric_heads(cfg, key, run.out / rlpips.HEADS[key], run.append_log, checkpoints)
        run.write_json(rlpips.TRAIN_SUMMARY, summary)


def _metric_results(cfg: MetricExperimentConfig, run: RunDir, phases: _Phases) -> None:
    from cinelora.metrics import rlpips

    rows = phases.time("evaluate", lambda: rlpips.evaluate_metric_heads(cfg, {k: run.out / f
                                                                              for k, f in rlpips.HEADS.items()}))
    run.write_metrics(rows)
    run = run.finish(cfg, phases, {**rlpips.metric_provenance(cfg), "train": run.read_json(rlpips.TRAIN_SUMMARY),
                                   "rows": len(rows)})
    print(f"wrote {run.metrics} ({len(rows)} rows) and {FINISHED_MARKER}")
    _compare_with_committed(run)


@_one_at_a_time
def train_metric(cfg: MetricExperimentConfig, force: bool) -> dict:
    """`cinelora rlpips-train`: 2AFC data, then both heads (heads already trained are kept)."""
    from cinelora.metrics import rlpips

    run = claim(cfg, force)
    rlpips.prepare_data(cfg)
    _metric_heads(cfg, run)
    return run.read_json(rlpips.TRAIN_SUMMARY)


@_one_at_a_time
def evaluate_metric(cfg: MetricExperimentConfig, source: str, force: bool) -> None:
    """`cinelora rlpips-eval`: 2AFC clean and attacked for both saved heads → metrics.csv, provenance."""
    from cinelora.metrics import rlpips

    run = RunDir.of(cfg)
    missing = [name for name in rlpips.HEADS.values() if not (run.out / name).is_file()]
    if missing:
        raise RunError(f"{run.out}: heads {missing} are missing: train first (python -m cinelora "
                       f"rlpips-train --config {source} --profile {cfg.profile})")
    _reopen(run, force, "metrics.csv")
    if not force:
        check_same_config(run, cfg)  # the heads it scores were trained with the config recorded there
    run.write_config(cfg)
    phases = _Phases()
    phases.time("data", lambda: rlpips.prepare_data(cfg))
    _metric_results(cfg, run, phases)


@_one_at_a_time
def run_metric(cfg: MetricExperimentConfig, force: bool) -> None:
    """`cinelora run` of a metric experiment: data → both heads → evaluation → provenance."""
    from cinelora.metrics import rlpips

    run = claim(cfg, force)
    phases = _Phases()
    phases.time("data", lambda: rlpips.prepare_data(cfg))
    phases.time("train", lambda: _metric_heads(cfg, run))
    _metric_results(cfg, run, phases)


# --- instrument experiments (kinds base_model, evaluators): the proxy's own pre-trained weights ---------------------------

CHUNKS = "chunks.json"  # one record per `cinelora run` call of a chunked run: its wall seconds, whether it finished


def _record_chunk(run: RunDir, seconds: float, finished: bool) -> list[dict]:
    chunks = (run.read_json(CHUNKS) or {"chunks": []})["chunks"] + [{"seconds": round(seconds, 1),
                                                                       "finished": finished}]
    run.write_json(CHUNKS, {"chunks": chunks})
    return chunks


@_one_at_a_time
def run_instrument(cfg: BaseModelConfig | EvaluatorsConfig, force: bool, budget_minutes: float | None) -> None:
    """`cinelora run` of an instrument experiment (proxy_base, proxy_evaluators): every part not done yet, until
    done or the budget is spent; `provenance.json` once all of it is."""
    from cinelora.instrument import base_model, evaluators
    from cinelora.instrument.loop import Deadline

    work, weights, summary = {
        "base_model": (base_model.run_base_model, base_model.load_weights_sidecar, base_model.EVIDENCE),
        "evaluators": (evaluators.run_evaluators, evaluators.weights_record, evaluators.SUMMARY)}[cfg.kind]
    run = claim(cfg, force)
    phases = _Phases()
    finished = phases.time(cfg.kind, lambda: work(cfg, run, Deadline(budget_minutes)))
    chunks = _record_chunk(run, phases[cfg.kind], finished)
    if not finished:
        print(f"{cfg.name}: stopped by --budget-minutes {budget_minutes:g}; run the same command again to continue")
        return
    run = run.finish(cfg, phases, {"weights": weights(run), "chunks": chunks,
                                   "seconds_all_chunks": round(sum(c["seconds"] for c in chunks), 1)})
    print(f"wrote {run.out} ({summary}):\n" + (run.out / summary).read_text())


# --- search experiments (kind: search): a profile's hyperparameters chosen on validation clips -----------------


def _search_point(run: RunDir, point) -> dict:
    """Train (or resume) one grid point in runs/<search>/<profile>/<stage>/<point>/: its record (`point_record`),
    status diverged when the loss or gradient became non-finite."""
    from cinelora import hparam_search
    from cinelora.train import NonFiniteLossError

    folder = run.state / point.stage.name / point.id
    point_run = RunDir(folder, folder / "state")
    check_same_config(point_run, point.cfg)  # an unfinished point resumes only under its own config
    remove_temporaries(point_run.out)
    point_run.out.mkdir(parents=True, exist_ok=True)
    point_run.write_config(point.cfg)
    start = time.perf_counter()
    try:
        summary, error = _train(point.cfg, point_run), None
    except NonFiniteLossError as err:
        summary, error = None, str(err)
    log = [json.loads(line) for line in point_run.log.read_text().splitlines()] if point_run.log.is_file() else []
    return hparam_search.point_record(point, summary, log, time.perf_counter() - start, error)


@_one_at_a_time
def run_search(cfg: SearchConfig, source: str, force: bool, budget_minutes: float | None) -> None:
    """`cinelora run` of a search experiment (`cinelora.hparam_search`): stage by stage, every grid point not finished
    yet is trained (training only: no generation, no evaluation) and scored on the validation clips, the tables
    rewritten after each; with `--budget-minutes`, after the chunk's first point no point starts that would end
    past it, judged by the stage's longest point so far (the same command continues); `provenance.json` once every
    stage has chosen."""
    from cinelora import hparam_search

    started = time.perf_counter()
    deadline = started + budget_minutes * 60 if budget_minutes else None
    experiments = {stage.name: load_config(stage_experiment(source, stage), cfg.profile, choices=False)
                   for stage in cfg.stages}
    for stage in cfg.stages:  # every input of every stage, before any work (the grid changes no input)
        _preflight(experiments[stage.name], str(stage_experiment(source, stage)), train=True, evaluate=False)
    run = claim(cfg, force)
    data_val = experiments[cfg.stages[0].name].data.val
    records: dict[str, list[dict]] = {}
    earlier: dict = {}
    finished, trained = True, 0
    for stage in cfg.stages:
        points = hparam_search.point_configs(cfg, source, stage, earlier)
        prepare_world(points[0].cfg)
        records[stage.name] = []
        for k, point in enumerate(points, 1):
            record = hparam_search.read_point(run.out, point)
            if record is None:
                longest = max((r["seconds"] for r in records[stage.name]), default=0.0)  # a point of this stage
                if deadline is not None and trained and time.perf_counter() + longest > deadline:
                    finished = False
                    break
                print(f"{cfg.name} {stage.name}: point {k}/{len(points)} {point.id} ({point.cfg.name})")
                record = _search_point(run, point)
                hparam_search.write_point(run.out, record)
                trained += 1
            records[stage.name].append(record)
            hparam_search.write_tables(run.out, cfg, source, records, data_val)
        chosen = hparam_search.outcomes(cfg, records).get(stage.name)
        if not finished:
            break
        if chosen is None:
            raise RunError(f"{cfg.name} stage {stage.name}: no point has a score (every one diverged: "
                           f"{run.out / hparam_search.POINTS / stage.name}); lower the grid's values")
        earlier |= chosen
    chunks = _record_chunk(run, time.perf_counter() - started, finished)
    if not finished:
        print(f"{cfg.name}: stopped by --budget-minutes {budget_minutes:g}; run the same command again to continue")
        return
    phases = {stage: sum(r["seconds"] for r in rs) for stage, rs in records.items()}
    run = run.finish(cfg, phases, {
        "points": {f"{r['stage']}/{r['point']}": {"config_sha256": r["config_sha256"], "status": r["status"]}
                   for rs in records.values() for r in rs},
        "experiments_config_sha256": {stage: config_hash(c) for stage, c in experiments.items()},
        "chosen": hparam_search.outcomes(cfg, records), "chunks": chunks,
        "seconds_all_chunks": round(sum(c["seconds"] for c in chunks), 1)})
    print(f"wrote {run.out / hparam_search.CSV} and {FINISHED_MARKER}:\n" + (run.out / hparam_search.TABLE).read_text())


def run_experiment(cfg: ExperimentConfig | MetricExperimentConfig | BaseModelConfig | SearchConfig, source: str,
                   force: bool, budget_minutes: float | None = None) -> None:
    """`cinelora run`: the whole experiment, whichever its kind (`budget_minutes`: instrument and search kinds)."""
    if cfg.kind in INSTRUMENT_KINDS:
        run_instrument(cfg, force, budget_minutes)
    elif cfg.kind == "search":
        run_search(cfg, source, force, budget_minutes)
    elif budget_minutes:
        raise RunError(f"--budget-minutes applies to instrument and search experiments (kinds "
                       f"{', '.join(INSTRUMENT_KINDS)}, search), not kind {cfg.kind}")
    elif cfg.kind == "metric":
        run_metric(cfg, force)
    else:
        run_generator(cfg, source, force)


__all__ = ["RunError", "prepare_world",
           "train_generator", "generate", "evaluate_generator", "run_generator", "train_metric", "evaluate_metric",
           "run_metric", "run_instrument", "run_search", "run_experiment"]
