"""Paper figures of the generator study: qualitative frame strips, training curves, per-domain bars with CIs.

Each figure shows the most real profile that has its inputs (full, else proxy, else smoke) and says which in its
title. Outputs go through `cinelora.report.save_figure` (PDF with DejaVu Sans embedded as TrueType, no dates or
software versions in the metadata, and a PNG copy for the README), so rebuilding gives the same bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from PIL import Image

from cinelora.config import PROFILES
from cinelora.report import STYLE, most_real_profile, save_figure
from cinelora.report.table2 import clip_matrix, domain_sort_key, domain_title
from cinelora.results import KEY_COLUMNS, METRICS, SAMPLE_LABEL_WIDTH, read_results
from cinelora.stats import bootstrap_mean_ci
from cinelora.study import CURVE_EXPERIMENTS, METHODS, PROFILE_TEXT

COLOURS = {"base": "#7f7f7f", "lora_r8": "#1f77b4", "lpips_r8": "#2ca02c", "robust_lpips_r8": "#d62728",
           "robust_lpips_r8_noearlystop": "#ff7f0e"}
BAR_METRICS = ("lpips", "clip_sim", "temporal_lpips_gap")
PERCEPTUAL_LABELS = {"lpips": "LPIPS", "rlpips": "R-LPIPS"}


# --- qualitative frame strips -------------------------------------------------------------------------------


def strip_paths(results_root: Path) -> tuple[str | None, dict[tuple[str, str], Path]]:
    """(profile, {(method, domain): samples/<domain>.png}) at the most real profile with a method's sample strip;
    (None, {}) when there is none."""
    found = {(p.parent.parent.name, p.parent.parent.parent.name, p.stem): p
             for p in sorted(Path(results_root).glob("*/*/samples/*.png")) if p.parent.parent.parent.name in METHODS}
    if not found:
        return None, {}
    profile = most_real_profile(p for p, _, _ in found)
    return profile, {(m, d): path for (p, m, d), path in found.items() if p == profile}


def make_frame_strips(strips: dict[tuple[str, str], np.ndarray], profile: str) -> plt.Figure:
    """Grid of frame strips: a ground-truth row, then one row per method; one column per domain.

    `strips[(method, domain)]` is the evaluation's sample image [2H, W·frames, 3] uint8: ground truth on top,
    generated below, the domain's first clip on its clean conditioning frame (the same clip for every method).
    """
    methods = [m for m in METHODS if any(k[0] == m for k in strips)]
    domains = sorted({d for _, d in strips}, key=domain_sort_key)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(methods) + 1, len(domains), squeeze=False,
                                 figsize=(2.5 * len(domains), 0.55 * (len(methods) + 1) + 0.5))
        for j, domain in enumerate(domains):
            first = next((strips[m, domain] for m in methods if (m, domain) in strips), None)
            for i, label in enumerate(["ground truth", *methods]):
                ax = axes[i][j]
                image = first if i == 0 else strips.get((label, domain))
                if image is not None:
                    half = image.shape[0] // 2
                    frames = image[:, SAMPLE_LABEL_WIDTH:]  # the strip's row names are the axis labels here
                    ax.imshow(frames[:half] if i == 0 else frames[half:], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(label, rotation=0, ha="right", va="center")
            axes[0][j].set_title(domain_title(domain))
        fig.suptitle(f"Generated frames (clean conditioning frame), {PROFILE_TEXT[profile].title}", fontsize=8)
        fig.tight_layout()
    return fig


def frame_strips_main(results_root: Path, out: Path) -> None:
    """`python -m cinelora report frame-strips`: results/<method>/<profile>/samples/*.png → `out` (+ PNG)."""
    profile, paths = strip_paths(results_root)
    if profile is None:
        raise FileNotFoundError(f"no {results_root}/<method>/<profile>/samples/<domain>.png for methods "
                                f"{list(METHODS)}")
    strips = {key: np.asarray(Image.open(path).convert("RGB")) for key, path in paths.items()}
    save_figure(make_frame_strips(strips, profile), out)


# --- training curves -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRun:
    """What a training curve needs from one run: its log lines, summary and early-stopping settings."""

    log: list[dict]
    best_step: int
    stopped_early: bool
    signal: str  # the logged field early stopping watched: "val_perceptual" or "val_loss"
    perceptual: str  # the run's perceptual metric name ("lpips" or "rlpips")


def training_files(results_root: Path, profile: str, experiment: str) -> tuple[Path, Path, Path]:
    directory = Path(results_root) / experiment / profile
    return directory / "train_log.jsonl", directory / "train_summary.json", directory / "config.resolved.yaml"


def read_training(results_root: Path) -> tuple[str | None, dict[str, TrainingRun]]:
    """(profile, {experiment: run}) of `CURVE_EXPERIMENTS` at the most real profile with a finished training run;
    (None, {}) when there is none."""
    runs: dict[tuple[str, str], TrainingRun] = {}
    for profile in PROFILES:
        for experiment in CURVE_EXPERIMENTS:
            log, summary, config = training_files(results_root, profile, experiment)
            if not (log.is_file() and summary.is_file() and config.is_file()):
                continue
            cfg, facts = yaml.safe_load(config.read_text()), json.loads(summary.read_text())
            signal = "val_perceptual" if cfg["train"]["early_stop_metric"] == "perceptual" else "val_loss"
            runs[profile, experiment] = TrainingRun(
                [json.loads(line) for line in log.read_text().splitlines() if line.strip()], facts["best_step"],
                facts["stopped_early"], signal, cfg["perceptual"]["metric"])
    if not runs:
        return None, {}
    profile = most_real_profile(p for p, _ in runs)
    return profile, {e: run for (p, e), run in runs.items() if p == profile}


def _series(log: list[dict], field: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[field]) for r in log if r.get(field) is not None]
    return [s for s, _ in points], [v for _, v in points]


def make_training_curves(runs: dict[str, TrainingRun], profile: str) -> plt.Figure:
    """Three panels: training flow-matching loss, validation flow-matching loss, validation perceptual distance.
    A star marks the validation step whose LoRA was kept (best early-stopping signal); a cross, where early
    stopping ended the run; a hollow square on the validation loss, a step that wrote sample strips."""
    panels = (("train", "training flow-matching loss"), ("val_loss", "validation flow-matching loss"),
              ("val_perceptual", "validation perceptual distance"))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.8))
        for experiment in [e for e in CURVE_EXPERIMENTS if e in runs]:
            run, colour = runs[experiment], COLOURS.get(experiment, "#000000")
            # `flow` is the flow-matching term alone; older logs have only `loss` (then the same thing)
            train_field = "flow" if any("flow" in r for r in run.log) else "loss"
            for ax, (field, _) in zip(axes, panels):
                steps, values = _series(run.log, train_field if field == "train" else field)
                if not steps:
                    continue
                label = f"{experiment} (perceptual: {PERCEPTUAL_LABELS.get(run.perceptual, run.perceptual)})"
                ax.plot(steps, values, color=colour, linewidth=1, marker="." if len(steps) < 30 else None,
                        markersize=3, label=label)
                sampled = [r["step"] for r in run.log if r.get("samples") and r.get(field) is not None]
                if field == "val_loss" and sampled:
                    at = dict(zip(steps, values))
                    ax.plot(sampled, [at[s] for s in sampled], marker="s", markersize=4, fillstyle="none",
                            color=colour, linestyle="none")
                if field == run.signal:
                    best = dict(zip(steps, values)).get(run.best_step)
                    if best is not None:
                        ax.plot([run.best_step], [best], marker="*", markersize=8, color=colour, linestyle="none")
                    if run.stopped_early:
                        ax.plot([steps[-1]], [values[-1]], marker="x", markersize=6, color=colour, linestyle="none")
        for ax, (_, title) in zip(axes, panels):
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
            ax.grid(True, linewidth=0.3)
        handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
        handles["kept LoRA (best early-stopping signal)"] = plt.Line2D([], [], marker="*", color="k", linestyle="none")
        handles["early stop"] = plt.Line2D([], [], marker="x", color="k", linestyle="none")
        if any(r.get("samples") for run in runs.values() for r in run.log):
            handles["sample strips written (samples/train/)"] = plt.Line2D([], [], marker="s", fillstyle="none",
                                                                           color="k", linestyle="none")
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, frameon=False, fontsize=6)
        fig.suptitle(f"Training curves, {PROFILE_TEXT[profile].title}", fontsize=8)
        fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def training_curves_main(results_root: Path, out: Path) -> None:
    """`python -m cinelora report training-curves`: train_log.jsonl + train_summary.json → `out` (+ PNG)."""
    profile, runs = read_training(results_root)
    if profile is None:
        raise FileNotFoundError(f"no finished training run (train_log.jsonl, train_summary.json, config.resolved.yaml) "
                                f"of {list(CURVE_EXPERIMENTS)} under {results_root}")
    save_figure(make_training_curves(runs, profile), out)


# --- per-domain bars with CIs --------------------------------------------------------------------------------


def bar_rows(metrics: pd.DataFrame) -> tuple[str | None, pd.DataFrame]:
    """(profile, rows) the domain bars show: clean `BAR_METRICS` rows of the methods at the most real profile."""
    rows = metrics[(metrics["condition"] == "clean") & metrics["experiment"].isin(list(METHODS))
                   & metrics["metric"].isin(list(BAR_METRICS))].sort_values(list(KEY_COLUMNS), kind="stable")
    if rows.empty:
        return None, rows
    profile = most_real_profile(rows["profile"])
    return profile, rows[rows["profile"] == profile]


def make_domain_bars(metrics: pd.DataFrame) -> plt.Figure:
    """One panel per metric of `BAR_METRICS`: per domain, one bar per method (clean frames) at the mean over
    clips (and seeds), with its 95% bootstrap CI as the error bar (`bootstrap_mean_ci`; none for a single clip)."""
    profile, rows = bar_rows(metrics)
    if profile is None:
        raise ValueError(f"domain bars: no clean rows of {list(BAR_METRICS)} for methods {list(METHODS)}")
    methods = [m for m in METHODS if (rows["experiment"] == m).any()]
    domains = sorted(rows["domain"].unique(), key=domain_sort_key)
    metric_names = [m for m in BAR_METRICS if (rows["metric"] == m).any()]
    width = 0.8 / len(methods)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(metric_names), figsize=(2.4 * len(metric_names) + 0.4, 2.7), squeeze=False)
        for ax, metric in zip(axes[0], metric_names):
            for k, method in enumerate(methods):
                means, errors = [], [[], []]
                for domain in domains:
                    group = rows[(rows["metric"] == metric) & (rows["experiment"] == method)
                                 & (rows["domain"] == domain)]
                    ci = bootstrap_mean_ci(clip_matrix(group)) if len(group) else None
                    means.append(ci.mean if ci else np.nan)
                    errors[0].append(ci.mean - ci.low if ci and ci.low is not None else 0.0)
                    errors[1].append(ci.high - ci.mean if ci and ci.high is not None else 0.0)
                x = np.arange(len(domains)) + (k - (len(methods) - 1) / 2) * width
                ax.bar(x, means, width, yerr=errors, capsize=2, color=COLOURS.get(method, "#000000"), label=method,
                       error_kw={"linewidth": 0.8})
            info = METRICS[metric]
            ax.set_title(f"{info.label} ({'lower' if info.direction == 'lower' else 'higher'} is better)")
            ax.set_xticks(np.arange(len(domains)), [domain_title(d).replace(" (", "\n(") for d in domains])
            ax.grid(True, axis="y", linewidth=0.3)
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=len(methods), frameon=False)
        fig.suptitle(f"Per-domain means (clean conditioning frames) with 95% bootstrap CIs over clips (and seeds)\n"
                     f"{PROFILE_TEXT[profile].title}", fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def domain_bars_main(results_root: Path, out: Path) -> None:
    """`python -m cinelora report domain-bars`: results/*/*/metrics.csv → `out` (+ PNG)."""
    save_figure(make_domain_bars(read_results(results_root)), out)


__all__ = ["make_frame_strips", "make_training_curves", "make_domain_bars", "frame_strips_main",
           "training_curves_main", "domain_bars_main", "strip_paths", "read_training", "training_files",
           "bar_rows", "TrainingRun", "BAR_METRICS"]
