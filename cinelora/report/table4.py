"""Paper Table 4, compute: LoRA training step time, peak memory, MFU, and model build + caching time.

Two sources, grouped by scale (true size, proxy, smoke):
- `results/bench/` (`python -m bench`): `steps_<label>.csv` (one row per case and figure: median
  seconds per step, peak allocated GiB, MFU, or an `oom`/`error` flag) and `configuration_<label>.csv` (seconds
  per stage of building every component and caching one clip). Its `architecture` column names the scale.
- `results/bench/proxy_loop_<label>.csv` (`python -m bench.proxy_loop`): the proxy loop's cache seconds per clip,
  batched generation and one experiment-seed of the main method, end to end;
- the training runs of Table 2's methods, `results/<experiment>/<proxy|smoke>/train_log.jsonl` (median of the
  logged `s_per_step`, max `peak_mem_gib`) with the run's `provenance.json` (device; peak process memory on a CPU)
  and `config.resolved.yaml` (clip size).
A scale with no measurement gets one row of "not measured" cells, so an empty cell never passes for zero.
"""
from __future__ import annotations

import csv
import itertools
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cinelora.atomic import atomic_write_text
from cinelora.config import PROFILES
from cinelora.report import latex_escape
from cinelora.study import MAIN, METHODS, PROFILE_TEXT

SCALES = {t.architecture: t.scale for t in PROFILE_TEXT.values()}  # bench architecture -> scale
SCALE_TITLES = {t.scale: t.scale_title for t in PROFILE_TEXT.values()}  # in display order
NOT_MEASURED = "not measured"
CPU_NOT_TIMED = "CPU"  # a CPU run's wall time varies from rerun to rerun and says nothing of GPU cost: not quoted
NOT_APPLICABLE = "--"
CACHE_STAGES = ("vae_latents", "condition_latents", "text_embeddings", "image_embeddings")
COLUMNS = ("Setting", r"Clip ($T{\times}H{\times}W$)", "s/step", "Speed-up", "Peak GiB", "MFU", "Build / cache s")


@dataclass(frozen=True)
class Row:
    """One table row: its scale and device (a block of the table), its cells, a plain-text label (for
    `make provenance`) and its results files."""

    scale: str
    device: str  # LaTeX; "" for a scale without any measurement
    cells: tuple[str, ...]  # one per COLUMNS entry, LaTeX
    label: str
    sources: tuple[Path, ...]


@dataclass(frozen=True)
class ComputeInputs:
    """Everything Table 4 reads, parsed: bench CSV rows (per file, as written), the rows of
    `bench/withdrawn.csv`, and the training runs' records."""

    bench_steps: dict[Path, list[dict]]
    bench_configuration: dict[Path, list[dict]]
    runs: dict[tuple[str, str], dict]  # (profile, experiment) -> {"log", "provenance", "config", "files"}
    withdrawn: tuple[dict, ...] = ()
    proxy_loop: dict[Path, list[dict]] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchCases:
    """The bench step rows that stand, per file, and how many cases were left out."""

    steps: dict[Path, list[dict]]
    withdrawn: int  # listed in bench/withdrawn.csv
    superseded: int  # measured again in a run of a later label


WITHDRAWN_COLUMNS = ("label", "case", "reason")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _label(path: Path) -> str:
    return path.stem.split("_", 1)[1]


def _case_key(row: dict) -> tuple:
    return row["device"], row["case"], row["frames"], row["height"], row["width"]


def _cases(steps: dict[Path, list[dict]]) -> set[tuple[Path, str]]:
    return {(p, r["case"]) for p, rows in steps.items() for r in rows}


def current_bench_steps(inputs: ComputeInputs) -> BenchCases:
    """The bench step rows that stand: without the (label, case) pairs of `bench/withdrawn.csv` (e.g. cases
    whose lever computed wrong gradients), and with each (device, case, clip) taken from its run of the latest
    label in sort order (a later run measured it again)."""
    for i, row in enumerate(inputs.withdrawn, start=2):
        if tuple(row) != WITHDRAWN_COLUMNS or not (row["reason"] or "").strip():
            raise ValueError(f"bench/withdrawn.csv line {i}: expected the columns {WITHDRAWN_COLUMNS}, a reason given")
    out = {(r["label"], r["case"]) for r in inputs.withdrawn}
    steps, labels = inputs.bench_steps, {p: _label(p) for p in inputs.bench_steps}
    unknown = out - {(labels[p], case) for p, case in _cases(steps)}
    if unknown:
        raise ValueError(f"bench/withdrawn.csv names cases that no steps_<label>.csv holds: {sorted(unknown)}")
    latest: dict[tuple, str] = {}
    for path in sorted(steps, key=labels.get):
        for row in steps[path]:
            if (labels[path], row["case"]) not in out:
                latest[_case_key(row)] = labels[path]
    kept = {p: [r for r in rows if (labels[p], r["case"]) not in out and latest[_case_key(r)] == labels[p]]
            for p, rows in steps.items()}
    kept = {p: rows for p, rows in kept.items() if rows}
    return BenchCases(kept, len(out), len(_cases(steps)) - len(out) - len(_cases(kept)))


def read_compute(results_root: Path) -> ComputeInputs:
    """Bench files under `results_root/bench/` and the training runs of Table 2's methods."""
    bench = Path(results_root) / "bench"
    runs = {}
    for profile in PROFILES:
        for experiment in METHODS:
            directory = Path(results_root) / experiment / profile
            log, prov, config = (directory / n for n in ("train_log.jsonl", "provenance.json", "config.resolved.yaml"))
            if log.is_file() and prov.is_file() and config.is_file():
                runs[profile, experiment] = {
                    "log": [json.loads(line) for line in log.read_text().splitlines() if line.strip()],
                    "provenance": json.loads(prov.read_text()), "config": yaml.safe_load(config.read_text()),
                    "files": (log, prov, config)}
    withdrawn = tuple(_read_csv(bench / "withdrawn.csv")) if (bench / "withdrawn.csv").is_file() else ()
    return ComputeInputs({p: _read_csv(p) for p in sorted(bench.glob("steps_*.csv"))},
                         {p: _read_csv(p) for p in sorted(bench.glob("configuration_*.csv"))}, runs, withdrawn,
                         {p: _read_csv(p) for p in sorted(bench.glob("proxy_loop_*.csv"))})


def _seconds(value: float) -> str:
    """Three significant digits below 10 s, then one decimal, then whole seconds from 100 s."""
    return f"${value:.3g}$" if value < 10 else f"${value:.1f}$" if value < 100 else f"${value:.0f}$"


def _device(name: str) -> str:
    return latex_escape(name.removeprefix("NVIDIA ")) if name != "cpu" else "CPU"


def _clip(frames, height, width) -> str:
    return rf"${frames}{{\times}}{height}{{\times}}{width}$"


def _clip_size(cell: str) -> tuple[int, ...]:
    """(T, H, W) back from a `_clip` cell, for sorting."""
    return tuple(int(n) for n in re.findall(r"\d+", cell))


def _figures(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """(architecture, device, case, frames, height, width) -> {metric: value}."""
    cases: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["architecture"], r["device"], r["case"], r["frames"], r["height"], r["width"])
        cases.setdefault(key, {})[r["metric"]] = float(r["value"])
    return cases


def _bench_step_rows(path: Path, rows: list[dict], run_rows: list[dict]) -> list[Row]:
    """Table rows of the standing `rows` of one run; speed-ups against the baseline case of that run
    (`run_rows`: everything it wrote) at the same clip size."""
    baselines = {(device, tuple(clip)): figures["s_per_step_median"]
                 for (_, device, case, *clip), figures in _figures(run_rows).items()
                 if case.startswith("baseline") and "s_per_step_median" in figures}
    out = []
    for (architecture, device, case, frames, height, width), figures in sorted(_figures(rows).items()):
        failed = "OOM" if figures.get("oom") else "error" if figures.get("error") else None
        step = failed or (_seconds(figures["s_per_step_median"]) if "s_per_step_median" in figures else NOT_MEASURED)
        baseline = baselines.get((device, (frames, height, width)))
        speedup = (rf"${baseline / figures['s_per_step_median']:.2f}\times$"
                   if baseline and "s_per_step_median" in figures and not failed else NOT_APPLICABLE)
        peak = f"${figures['peak_allocated_gib']:.1f}$" if "peak_allocated_gib" in figures else NOT_MEASURED
        mfu = rf"${figures['mfu'] * 100:.1f}\%$" if "mfu" in figures else NOT_MEASURED
        out.append(Row(SCALES.get(architecture, architecture), _device(device),
                       (rf"\texttt{{{latex_escape(case)}}}", _clip(frames, height, width), step, speedup, peak,
                        mfu if not failed else NOT_APPLICABLE, NOT_APPLICABLE),
                       f"{_label(path)}: {device} {case} {frames}x{height}x{width}", (path,)))
    return out


def _bench_configuration_rows(path: Path, rows: list[dict]) -> list[Row]:
    stages: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["architecture"], r["device"], r["frames"], r["height"], r["width"])
        stages.setdefault(key, {})[r["stage"]] = float(r["seconds"])
    out = []
    for (architecture, device, frames, height, width), seconds in sorted(stages.items()):
        build = _seconds(seconds["build_models"]) if "build_models" in seconds else NOT_MEASURED
        cache = (_seconds(sum(seconds[s] for s in CACHE_STAGES)) if all(s in seconds for s in CACHE_STAGES)
                 else NOT_MEASURED)
        out.append(Row(SCALES.get(architecture, architecture), _device(device),
                       ("build + cache one clip", _clip(frames, height, width), *[NOT_APPLICABLE] * 4,
                        f"{build} / {cache}"),
                       f"{_label(path)}: {device} build + cache {frames}x{height}x{width}", (path,)))
    return out


def _proxy_loop_rows(path: Path, rows: list[dict]) -> list[Row]:
    """The proxy loop's rows of one `bench.proxy_loop` run: caching, batched generation, one experiment-seed."""
    if not rows:
        return []
    first = rows[0]
    figures = {r["figure"]: float(r["value"]) for r in rows}
    scale, device = PROFILE_TEXT[first["profile"]].scale, _device(first["device"])
    clip, label = _clip(first["frames"], first["height"], first["width"]), f"{_label(path)}: {first['device']}"
    timed = first["device"] != "cpu"

    def time_cell(value: float) -> str:  # a CPU's wall time is not quoted (CPU_NOT_TIMED)
        return _seconds(value) if timed else CPU_NOT_TIMED

    out = []
    if "cache_s_per_clip" in figures:
        out.append(Row(scale, device, ("cache the training clips", clip, *[NOT_APPLICABLE] * 4,
                                       f"{time_cell(figures['cache_model_load_s'])} / "
                                       f"{time_cell(figures['cache_s_per_clip'])}"), f"{label} cache", (path,)))
    if "generation_s_per_batch" in figures:
        rate = f" (${figures['generation_clips_per_s']:.0f}$ clips/s)" if timed else ""
        out.append(Row(scale, device, (f"generate {figures['generation_batch']:.0f} clips{rate}", clip,
                                       time_cell(figures["generation_s_per_batch"]), *[NOT_APPLICABLE] * 4),
                       f"{label} generation", (path,)))
    if "experiment_total_s" in figures:
        out.append(Row(scale, device, (rf"one \texttt{{{latex_escape(MAIN)}}} experiment-seed", clip,
                                       time_cell(figures["experiment_total_s"]), *[NOT_APPLICABLE] * 4),
                       f"{label} experiment-seed", (path,)))
    return out


def _run_row(profile: str, experiment: str, run: dict) -> Row:
    steps = [r["s_per_step"] for r in run["log"] if r.get("s_per_step") is not None]
    gpu = [r["peak_mem_gib"] for r in run["log"] if r.get("peak_mem_gib") is not None]
    device = run["provenance"].get("device", {}).get("cuda_device") or "cpu"
    rss = run["provenance"].get("peak_memory", {}).get("cpu_max_rss_bytes")
    peak = (f"${max(gpu):.1f}$" if gpu else rf"${rss / 2**30:.1f}^\dagger$" if rss else NOT_MEASURED)
    data = run["config"]["data"]
    return Row(PROFILE_TEXT[profile].scale, _device(device),
               (rf"\texttt{{{latex_escape(experiment)}}} run", _clip(data["num_frames"], data["height"], data["width"]),
                CPU_NOT_TIMED if device == "cpu" else _seconds(statistics.median(steps)) if steps else NOT_MEASURED,
                NOT_APPLICABLE, peak, NOT_MEASURED, NOT_MEASURED),
               f"{profile}/{experiment} training", run["files"])


def table4_rows(inputs: ComputeInputs) -> list[Row]:
    """Every row of Table 4 in display order: bench rows, then the runs' rows, per scale; a "not measured" row
    for each scale without any."""
    rows = [r for p, rs in inputs.bench_configuration.items() for r in _bench_configuration_rows(p, rs)]
    # step rows of every bench file together: per device, by clip size, then case name
    standing = current_bench_steps(inputs).steps
    steps = [r for p, rs in standing.items() for r in _bench_step_rows(p, rs, inputs.bench_steps[p])]
    rows += sorted(steps, key=lambda r: (r.device, _clip_size(r.cells[1]), r.cells[0]))
    rows += [r for p, rs in inputs.proxy_loop.items() for r in _proxy_loop_rows(p, rs)]
    rows += [_run_row(p, e, run) for (p, e), run in sorted(
        inputs.runs.items(), key=lambda item: (PROFILES.index(item[0][0]), METHODS.index(item[0][1])))]
    for scale in SCALE_TITLES:
        if not any(r.scale == scale for r in rows):
            rows.append(Row(scale, "", ("LoRA training step", NOT_APPLICABLE, *([NOT_MEASURED] * (len(COLUMNS) - 2))),
                            "not measured", ()))
    order = list(SCALE_TITLES)
    return sorted(rows, key=lambda r: (order.index(r.scale) if r.scale in order else len(order), r.device))


def _merge_not_measured(cells: tuple[str, ...]) -> list[str]:
    """Runs of "not measured" cells become one `\\multicolumn` cell, so the table stays narrow."""
    merged: list[str] = []
    for value, run in itertools.groupby(cells):
        span = len(list(run))
        if value == NOT_MEASURED and span > 1:
            merged.append(rf"\multicolumn{{{span}}}{{c}}{{{NOT_MEASURED}}}")
        else:
            merged += [value] * span
    return merged


def _caption(rows: list[Row], inputs: ComputeInputs) -> str:
    clips = sorted({run["config"]["train"]["batch_size"] * run["config"]["train"]["grad_accum"]
                    for run in inputs.runs.values()})
    text = (r"Compute of one LoRA training step (rank 8). Bench rows (\texttt{python -m bench}): the "
            "transformer with random weights at the preset's size (speed and memory do not depend on the values), "
            "one clip per step on cached inputs; s/step: median of the timed steps; Peak GiB: peak memory allocated "
            r"by torch on the GPU; MFU: model FLOPs per step / (s/step $\times$ the GPU's datasheet dense bf16 "
            "peak); Build / cache s: constructing every component (random initialisation, no weight loading) / "
            "the VAE latents, condition latents, text and image embeddings of one clip. Run rows: the training "
            r"runs of Table~\ref{tab:cross-domain}'s methods")
    if clips:
        text += (f", one optimizer step = {' or '.join(str(c) for c in clips)} clips (batch " r"$\times$ gradient "
                 "accumulation), encoded on the fly; s/step: median over logged steps (validation included)")
    if any(CPU_NOT_TIMED in r.cells[2:3] for r in rows):
        text += f"; s/step ``{CPU_NOT_TIMED}'': a CPU run, whose wall time is not quoted (it varies between reruns)"
    if any(r"\dagger" in cell for r in rows for cell in r.cells):
        text += r"; ${}^\dagger$: CPU run, peak resident memory of the whole process (training and evaluation)"
    if inputs.proxy_loop:
        text += (r"; proxy-loop rows (\texttt{python -m bench.proxy_loop}): caching the training clips (model load / "
                 "seconds per clip), one batch of generated clips and one whole experiment-seed (world, training, "
                 "evaluation of every domain, clean and attacked), s/step holding the seconds of the batch or of "
                 "the experiment-seed")
    text += (r". Speed-up: the baseline case's s/step (the plain diffusers + peft + gradient-checkpointing step) "
             "over the case's, both from the same run at the same clip size")
    bench = current_bench_steps(inputs)
    if bench.withdrawn or bench.superseded:
        text += (f"; not shown: {bench.superseded} case(s) measured again in a later run and {bench.withdrawn} "
                 r"withdrawn in \texttt{results/bench/withdrawn.csv} (with the reason)")
    text += rf". ``{NOT_MEASURED}'': no measurement in \texttt{{results/}}; {NOT_APPLICABLE}: does not apply. "
    notes = [t.generator for p, t in PROFILE_TEXT.items()
             if p != "full" and any(r.scale == t.scale and r.sources for r in rows)]
    if notes:
        text += "Proxy and smoke rows time small models: they say nothing about 14B cost. " + " ".join(notes)
    return text.rstrip()


def make_table4(inputs: ComputeInputs) -> str:
    """Table 4 as a booktabs `table` fragment (label `tab:compute`); a pure function of the parsed inputs."""
    rows = table4_rows(inputs)
    width = len(COLUMNS)
    lines = [
        r"% Generated by `python -m cinelora report table4` from results/bench/ and results/*/*/train_log.jsonl: "
        "do not edit.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_caption(rows, inputs)}}}",
        r"\label{tab:compute}",
        r"\footnotesize",
        r"\setlength{\tabcolsep}{2.5pt}",
        # long case names: shrunk to the text width when wider, never enlarged
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{l{'c' * (width - 1)}}}",
        r"\toprule",
        " & ".join(COLUMNS) + r" \\",
    ]
    for scale, device in dict.fromkeys((r.scale, r.device) for r in rows):
        title = SCALE_TITLES.get(scale, scale) + (f"; {device}" if device else "")
        lines += [r"\midrule", rf"\multicolumn{{{width}}}{{l}}{{\emph{{{title}}}}} \\"]
        lines += [" & ".join(_merge_not_measured(r.cells)) + r" \\"
                  for r in rows if (r.scale, r.device) == (scale, device)]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def main(results_root: Path, out: Path) -> None:
    """Read the compute results under `results_root` and write Table 4 to `out` atomically.

    `python -m cinelora report table4` calls this with `results` and `paper/tables/table4.tex`.
    """
    text = make_table4(read_compute(results_root))
    atomic_write_text(out, text)


__all__ = ["make_table4", "table4_rows", "read_compute", "current_bench_steps", "main", "Row", "ComputeInputs",
           "BenchCases", "NOT_MEASURED", "SCALES"]
