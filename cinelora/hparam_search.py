"""A profile's training hyperparameters chosen on the fine-tuning domain's validation clips only (issue 16), never
on a test clip or a held-out domain: the `kind: search` experiments (`experiments/proxy_search`), which `cinelora
run` runs (`cinelora.runner.run_search`); this module holds what a search means, the runner does the work.

A search is stages, in order. A stage trains every point of its grid with the one training loop
(`cinelora.train.train`, early stopping included; nothing is generated or evaluated), each point from its stage
experiment's config at the profile *without* the profile's chosen values (`load_config(..., choices=False)`: the
seed's values, the profile's step budget), with the values the earlier stages chose and the point's own set over it.

A point's score is its run's `best_val`, at its `best_step`: the value of the experiment's early-stopping signal on
`data.val` (the stage's `criterion`, checked to be that signal) at the validation early stopping counted best (one
every `train.val_every` steps and at the last step; a later one counts only when it is lower by more than
`train.early_stop_min_delta`), so it is the validation value of the very LoRA the run keeps.
Validation uses fixed batches, timesteps and noise (`train.validate`): every point is scored on the same draws. Its
perceptual distance D is measured on clean conditioning frames and not weighted by λ, so scores are comparable across
λ and ε, which change only what is trained. The stage chooses the point of lowest score (the first in grid order of
equal ones; a point whose training diverged has no score): its grid values, and with `choose_steps`, train.steps :=
its best step.

Files, in results/<search>/<profile>/: `points/<stage>/<point>.json` (one per finished point: `point_record`),
`search.csv` (`CSV_COLUMNS`) and `search.md` (the tables, the chosen values and where to copy them), the search's
`config.resolved.yaml`, `chunks.json`, and `provenance.json` last. A point's run (training log, LoRA, checkpoints)
goes to runs/<search>/<profile>/<stage>/<point>/: a finished point is kept on a rerun, an unfinished one resumes from
its checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinelora.atomic import atomic_write_text
from cinelora.config import (CHOSEN_KEYS, ExperimentConfig, SearchConfig, SearchStageConfig, chain_root, config_hash,
                             flatten, load_config, profile_choices, stage_experiment)
from cinelora.rundir import ConfigChangedError
from cinelora.study import PROFILE_TEXT

POINTS = "points"  # points/<stage>/<point>.json
CSV = "search.csv"
TABLE = "search.md"
VALIDATION_KEYS = ("val_loss", "val_perceptual")  # what train.validate records
CSV_COLUMNS = ("stage", "point", "experiment", *CHOSEN_KEYS, "criterion", "score", "best_step", "steps",
               "stopped_early", *(f"{k}_at_best" for k in VALIDATION_KEYS), "status", "chosen", "seconds",
               "config_sha256")


@dataclass(frozen=True)
class Point:
    """One grid point of a stage: its id, the values its axes give it, and the resolved config it trains."""

    stage: SearchStageConfig
    id: str
    values: dict[str, float]
    cfg: ExperimentConfig


def point_configs(spec: SearchConfig, source: str, stage: SearchStageConfig, earlier: dict[str, Any]) -> list[Point]:
    """The stage's points, in grid order: its experiment at the profile without the profile's chosen values, the
    earlier stages' outcome and the point's values set, the search's seed."""
    path = stage_experiment(source, stage)
    return [Point(stage, pid, values, dataclasses.replace(
        load_config(path, spec.profile, choices=False, overrides={**earlier, **values}), seed=spec.seed))
        for pid, values in stage.points()]


def point_file(out: Path, point: Point) -> Path:
    return out / POINTS / point.stage.name / f"{point.id}.json"


def point_record(point: Point, summary: dict | None, log: list[dict], seconds: float, error: str | None) -> dict:
    """What a finished point leaves: `status` done (with `train`, the run's train_summary.json) or diverged (with
    the `error`), its values of every chosen key, its config hash and every validation record of its log."""
    flat = flatten(point.cfg)
    return {"stage": point.stage.name, "point": point.id, "experiment": point.cfg.name,
            "values": {k: flat[k] for k in CHOSEN_KEYS}, "grid": point.values, "criterion": point.stage.criterion,
            "config_sha256": config_hash(point.cfg), "status": "done" if summary is not None else "diverged",
            "error": error, "train": summary, "seconds": round(seconds, 3),
            "validations": [{"step": r["step"], **{k: r[k] for k in VALIDATION_KEYS if k in r}}
                            for r in log if "val_loss" in r]}


def read_point(out: Path, point: Point) -> dict | None:
    """The record of a point finished before (None when it is not), if it was trained with this point's config."""
    path = point_file(out, point)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record["config_sha256"] != config_hash(point.cfg):
        raise ConfigChangedError(
            f"{path} was trained with config {record['config_sha256'][:12]}, this search's point {point.stage.name}/"
            f"{point.id} is {config_hash(point.cfg)[:12]} (its experiment's config or an earlier stage's outcome "
            "changed since): put the old values back to continue, or pass --force to run the search again")
    return record


def write_point(out: Path, record: dict) -> None:
    path = out / POINTS / record["stage"] / f"{record['point']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def score(record: dict) -> float | None:
    return record["train"]["best_val"] if record["status"] == "done" else None


def choose(records: list[dict]) -> dict | None:
    """The record of lowest score, the first in grid order of equal ones (`records` in grid order); None when no
    point has a score."""
    scored = [r for r in records if score(r) is not None and math.isfinite(score(r))]
    return min(scored, key=score) if scored else None


def outcome(stage: SearchStageConfig, record: dict) -> dict[str, Any]:
    """The values a stage chose: the chosen point's grid values, and train.steps := its best step (`choose_steps`)."""
    values: dict[str, Any] = dict(record["grid"])
    if stage.choose_steps:
        values["train.steps"] = record["train"]["best_step"]
    return {k: values[k] for k in CHOSEN_KEYS if k in values}


def budget_bound(record: dict) -> bool:
    """Whether the score was still falling at the run's last validation: its best step is its last, not stopped."""
    return record["train"]["best_step"] == record["train"]["steps"] and not record["train"]["stopped_early"]


def outcomes(spec: SearchConfig, records: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """{stage: the values it chose} for the stages whose every point is finished and one has a score."""
    found = {}
    for stage in spec.stages:
        stage_records = records.get(stage.name, [])
        chosen = choose(stage_records) if len(stage_records) == len(stage.points()) else None
        if chosen is not None:
            found[stage.name] = outcome(stage, chosen)
    return found


def copy_targets(spec: SearchConfig, source: str, chosen: dict[str, dict[str, Any]]) -> list[tuple[Path, str, Any, Any]]:
    """[(home file, key, chosen value, the value the profile now gives the stage's experiment)] for every value the
    search chose. The home is the root of the stage experiment's chain: its `profiles.<profile>` holds the profile's
    chosen values for every experiment below it that does not set the key itself."""
    rows = []
    for stage in spec.stages:
        if stage.name not in chosen:
            continue
        path = stage_experiment(source, stage)
        now = profile_choices(path, spec.profile)
        rows += [(chain_root(path), key, value, now.get(key)) for key, value in chosen[stage.name].items()]
    return rows


def _value(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _metric(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _at_best(record: dict) -> dict[str, float | None]:
    best = record["train"]["best_step"] if record["status"] == "done" else None
    row = next((v for v in record["validations"] if v["step"] == best), {})
    return {k: row.get(k) for k in VALIDATION_KEYS}


def csv_rows(spec: SearchConfig, records: dict[str, list[dict]]) -> list[list[str]]:
    """search.csv's rows (CSV_COLUMNS): every finished point, stages in order, points in grid order."""
    chosen = {stage.name: choose(records.get(stage.name, [])) for stage in spec.stages
              if len(records.get(stage.name, [])) == len(stage.points())}
    rows = []
    for stage in spec.stages:
        for r in records.get(stage.name, []):
            done, at_best = r["status"] == "done", _at_best(r)
            rows.append([r["stage"], r["point"], r["experiment"], *(_value(r["values"][k]) for k in CHOSEN_KEYS),
                         r["criterion"], _metric(score(r)), _value(r["train"]["best_step"] if done else None),
                         _value(r["train"]["steps"] if done else None),
                         _value(int(r["train"]["stopped_early"]) if done else None),
                         *(_metric(at_best[k]) for k in VALIDATION_KEYS), r["status"],
                         str(int(chosen.get(stage.name) is r)), f"{r['seconds']:.1f}", r["config_sha256"]])
    return rows


def markdown(spec: SearchConfig, source: str, records: dict[str, list[dict]], data_val: str) -> str:
    """search.md: per stage, its points' scores and the chosen one; then the outcome and where it goes."""
    lines = [f"# {spec.name} at {spec.profile}", "",
             PROFILE_TEXT[spec.profile].generator, "",
             f"Every point trained with seed {spec.seed} and was scored on the validation clips of the fine-tuning domain "
             f"only (`data.val`: `{data_val}`); none was generated from or scored on a test clip or a held-out domain. "
             "Score: the point's best validation value of the stage's criterion (its early-stopping signal; lower is "
             "better), at its best step; the stage chooses the lowest (the first in grid order of equal ones).", ""]
    chosen = outcomes(spec, records)
    for stage in spec.stages:
        stage_records = records.get(stage.name, [])
        keys = [k for axis in stage.grid.values() for k in axis]
        lines += [f"## Stage `{stage.name}`: {stage.experiment}, criterion `{stage.criterion}`", "",
                  "| point | " + " | ".join(f"`{k}`" for k in keys) + " | score | best step | steps | "
                  + " | ".join(f"{k} at best" for k in VALIDATION_KEYS) + " | status |",
                  "|" + "---|" * (len(keys) + 5 + len(VALIDATION_KEYS))]
        best = choose(stage_records) if stage.name in chosen else None
        for r in stage_records:
            done, at_best = r["status"] == "done", _at_best(r)
            mark = "**" if r is best else ""
            lines.append(f"| {mark}{r['point']}{mark} | " + " | ".join(_value(r["values"][k]) for k in keys)
                         + f" | {_metric(score(r))} | {_value(r['train']['best_step'] if done else None)} | "
                         + f"{_value(r['train']['steps'] if done else None)} | "
                         + " | ".join(_metric(at_best[k]) for k in VALIDATION_KEYS) + f" | {r['status']} |")
        if best is None:
            lines += ["", f"Not chosen yet: {len(stage_records)} of {len(stage.points())} points finished"
                      + ("" if len(stage_records) < len(stage.points()) else ", none with a score") + ".", ""]
            continue
        lines += ["", f"Chosen: **{best['point']}**: " + ", ".join(f"`{k}` {_value(v)}"
                                                                   for k, v in chosen[stage.name].items())
                  + (" (its best step)" if stage.choose_steps else "") + "."]
        if stage.choose_steps and budget_bound(best):
            lines.append(f"Its score was still falling at its last validation (step {best['train']['steps']}): the "
                         "budget may be too short for the steps to be chosen.")
        lines.append("")
    targets = copy_targets(spec, source, chosen)
    if targets:
        homes = ", ".join(f"`{h}`" for h in sorted({str(home) for home, *_ in targets}))
        lines += ["## Outcome", "",
                  "At smoke the search is a pipeline check, and its outcome is not copied anywhere." if spec.profile
                  == "smoke" else f"The {spec.profile} profile's chosen values live in `profiles: {spec.profile}:` of "
                  f"{homes}, for every experiment below it that does not set a key itself: copy them there, with a "
                  f"comment naming `results/{spec.name}/{spec.profile}/{CSV}`.", "",
                  "```yaml", *(f"{key}: {value!r}" for _, key, value, _ in targets), "```", ""]
        differ = [(key, value, now) for _, key, value, now in targets if now != value]
        lines += [f"Now in `profiles: {spec.profile}:` of {homes}: " + ("all of them (copied)." if not differ else
                  ", ".join(f"`{key}` {_value(now) if now is not None else 'unset'} (chosen {_value(value)})"
                            for key, value, now in differ) + "."), ""]
    return "\n".join(lines)


def write_tables(out: Path, spec: SearchConfig, source: str, records: dict[str, list[dict]], data_val: str) -> None:
    """search.csv and search.md from the finished points' records."""
    text = "".join(",".join(row) + "\n" for row in [list(CSV_COLUMNS), *csv_rows(spec, records)])
    atomic_write_text(out / CSV, text)
    atomic_write_text(out / TABLE, markdown(spec, source, records, data_val))


__all__ = ["Point", "POINTS", "CSV", "TABLE", "CSV_COLUMNS", "point_configs", "point_file", "point_record", "read_point",
           "write_point", "score", "choose", "outcome", "outcomes", "budget_bound", "copy_targets", "csv_rows",
           "markdown", "write_tables"]
