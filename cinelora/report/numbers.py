"""Every number the paper's prose quotes, as LaTeX macros in `paper/generated/numbers.tex` (remodnav's pattern).

The prose types no number: it writes `\\HeldOutLpipsMain` and this module defines it from results/. Each macro
knows the results files it comes from (`make provenance` lists them). A number without data expands to "n/a".
Groups: the generator study at its most real profile (held-out LPIPS / CLIP-SIM per method, the main method
against the baseline with a paired test, robustness), training facts, metric robustness (Table 1's 2AFC
scores), and true-size compute from `results/bench/`.

The main comparison's p-values (`\\MainVsLoraP`, `\\MainVsLoraPAttacked`) are Holm-adjusted over its two tests,
clean and attacked (`\\MainVsLoraFamily` tests), the family stated before the runs (`cinelora.report.main_comparison`);
`\\MainVsLoraEffect` is the effect size, the rank-biserial correlation (`cinelora.stats.rank_biserial`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cinelora.atomic import atomic_write_text
from cinelora.report import bootstrap_mean_ci, count_phrase, figures, fixed, latex_escape, most_real_profile
from cinelora.report.table1 import METRIC_ROWS, two_afc_rows
from cinelora.report.main_comparison import MainComparison, main_comparison
from cinelora.report.table2 import ALPHA, Floor, clip_matrix, read_fvd_floors, table2_cells
from cinelora.report.table3 import held_out_values
from cinelora.report.table4 import CACHE_STAGES, SCALES, ComputeInputs, current_bench_steps, read_compute
from cinelora.results import KEY_COLUMNS, read_results
from cinelora.rundir import run_folder
from cinelora.study import BASELINE, MAIN, METHODS, PROFILE_TEXT, SEARCH, TRAIN_DOMAIN

NOT_AVAILABLE = "n/a"
METHOD_NAMES = {"base": "Base", "lora_r8": "Lora", "lpips_r8": "Lpips", "robust_lpips_r8": "Main"}  # macro suffixes
# held-out column (see table3.held_out_values) -> macro prefix; the macro suffix names the method
STUDY_COLUMNS = {("clean", "lpips"): "HeldOutLpips", ("clean", "clip_sim"): "HeldOutClipSim",
                 ("delta", "lpips"): "RobustnessLpips"}
MAIN_VS_BASELINE = ("MainMinusLoraHeldOutLpips", "MainMinusLoraHeldOutLpipsCI", "MainVsLoraTest", "MainVsLoraP",
                    "MainVsLoraFamily", "MainVsLoraEffect", "MainVsLoraPairs")
SHARED = ("MainVsLoraFamily", "MainVsLoraPairs")  # the same for both conditions: no `Attacked` twin
BASELINE_CASE = "baseline_480p"  # the plain diffusers + peft + gradient-checkpointing step (bench plan `full`)


@dataclass(frozen=True)
class Macro:
    """`\\name` expands to `value`; `sources` are the results files behind it."""

    name: str
    value: str
    sources: tuple[Path, ...]


def _num(value: float, decimals: int) -> str:
    return rf"\ensuremath{{{fixed(value, decimals)}}}"


def _p(p: float | None) -> str:
    if p is None:
        return NOT_AVAILABLE
    return r"\ensuremath{<0.001}" if p < 0.001 else rf"\ensuremath{{{p:.2g}}}"


def _metrics_files(results_root: Path, frame: pd.DataFrame) -> tuple[Path, ...]:
    runs = sorted(set(zip(frame["experiment"], frame["profile"], frame["seed"].astype(int))))
    return tuple(run_folder(results_root, e, p, k) / "metrics.csv" for e, p, k in runs)


def study_macros(metrics: pd.DataFrame, results_root: Path) -> list[Macro]:
    """Held-out numbers of Table 2's methods at the most real profile with their clean rows."""
    rows = metrics[metrics["experiment"].isin(list(METHODS))].sort_values(list(KEY_COLUMNS), kind="stable")
    clean = rows[rows["condition"] == "clean"]
    if clean.empty:  # every macro still defined, so the paper builds and says n/a
        names = ["StudyProfile", "StudyScaleMeaning", "StudyClipsPerDomain", "StudySeeds", "StudyHeldOutDomains",
                 *(prefix + suffix for suffix in METHOD_NAMES.values() for prefix in STUDY_COLUMNS.values())]
        return [Macro(n, NOT_AVAILABLE, ()) for n in names]
    profile = most_real_profile(clean["profile"])
    rows, clean = rows[rows["profile"] == profile], clean[clean["profile"] == profile]
    per_clip = clean[clean["clip"] != "all"]
    held_out = sorted(set(clean["domain"]) - {TRAIN_DOMAIN})
    macros = [
        Macro("StudyProfile", profile, _metrics_files(results_root, clean)),
        Macro("StudyScaleMeaning", PROFILE_TEXT[profile].generator, ()),
        Macro("StudyClipsPerDomain", count_phrase(set(per_clip.groupby(["experiment", "domain"])["clip"].nunique()),
                                                  "clip"), _metrics_files(results_root, per_clip)),
        Macro("StudySeeds", count_phrase(set(clean.groupby("experiment")["seed"].nunique()), "seed"),
              _metrics_files(results_root, clean)),
        Macro("StudyHeldOutDomains", " and ".join([", ".join(held_out[:-1]), held_out[-1]] if len(held_out) > 1
                                                  else held_out) or NOT_AVAILABLE, ()),
    ]
    values = {c: held_out_values(rows, c) for c in STUDY_COLUMNS}
    for method, suffix in METHOD_NAMES.items():
        for column, prefix in STUDY_COLUMNS.items():
            group = values[column][values[column]["experiment"] == method]
            digits = 3 + (column[0] == "delta")  # a change is smaller than the metric itself: one more digit
            value = _num(bootstrap_mean_ci(clip_matrix(group)).mean, digits) if len(group) else NOT_AVAILABLE
            macros.append(Macro(prefix + suffix, value, _metrics_files(results_root, group)))
    return macros


VALIDITY = ("ValidityLoraMinusBase", "ValidityP", "StudyValidity")
VALID, NOT_VALID = "valid: the LoRA beats the base model on its own domain", \
    "not yet valid: the LoRA does not beat the base model on its own domain"


def validity_macros(metrics: pd.DataFrame, profile: str | None, results_root: Path) -> list[Macro]:
    """Whether the study at `profile` is valid (issue 16): on the fine-tuning domain's test clips the plain LoRA
    has lower LPIPS than `base`, at p < ALPHA Holm-adjusted within Table 2 (its base-vs-baseline cell)."""
    cells = table2_cells(metrics) if profile else {}
    base, lora = (cells.get((profile, TRAIN_DOMAIN, e, "lpips")) for e in ("base", BASELINE))
    if base is None or lora is None or base.test is None:
        return [Macro(n, NOT_AVAILABLE, ()) for n in VALIDITY]
    rows = metrics[(metrics["profile"] == profile) & metrics["experiment"].isin(["base", BASELINE])]
    sources = _metrics_files(results_root, rows)
    difference = lora.ci.mean - base.ci.mean
    valid = difference < 0 and base.p_holm is not None and base.p_holm < ALPHA
    return [Macro("ValidityLoraMinusBase", _num(difference, 4), sources), Macro("ValidityP", _p(base.p_holm), sources),
            Macro("StudyValidity", VALID if valid else NOT_VALID, sources)]


def comparison_macros(comparison: MainComparison | None, metrics: pd.DataFrame, results_root: Path) -> list[Macro]:
    """The main comparison (`cinelora.report.main_comparison`), clean and attacked (suffix `Attacked`): the mean
    held-out LPIPS difference, its CI, the test, its p-value Holm-adjusted over the two conditions, the family's
    size, the rank-biserial effect size and the pairs; `\\MainVerdict`: the stated rule's answer."""
    names = [*MAIN_VS_BASELINE, *(n + "Attacked" for n in MAIN_VS_BASELINE if n not in SHARED)]
    if comparison is None:
        return [Macro(n, NOT_AVAILABLE, ()) for n in [*names, "MainVerdict"]]
    runs = metrics[(metrics["profile"] == comparison.profile) & metrics["experiment"].isin([MAIN, BASELINE])]
    sources = _metrics_files(results_root, runs) + tuple(sorted({f.path for f in comparison.floors.values()}))
    family = str(sum(c.test.p_value is not None for c in comparison.lpips.values()))
    macros = []
    for condition, suffix in (("clean", ""), ("attacked", "Attacked")):
        lp = comparison.lpips.get(condition)
        wanted = [n for n in MAIN_VS_BASELINE if not (suffix and n in SHARED)]
        if lp is None:
            macros += [Macro(n + suffix, NOT_AVAILABLE, ()) for n in wanted]
            continue
        interval = NOT_AVAILABLE if lp.low is None else rf"\ensuremath{{[{fixed(lp.low, 4)}, {fixed(lp.high, 4)}]}}"
        effect = _num(lp.test.rank_biserial, 2) if lp.test.rank_biserial is not None else NOT_AVAILABLE
        values = (_num(lp.difference, 4), interval, lp.test.test_name, _p(lp.p_holm),
                  family if lp.p_holm is not None else NOT_AVAILABLE, effect, str(lp.test.n))
        macros += [Macro(n + suffix, v, sources) for n, v in zip(MAIN_VS_BASELINE, values) if n in wanted]
    return macros + [Macro("MainVerdict", comparison.verdict, sources)]


def read_summaries(results_root: Path) -> dict[tuple[str, str], tuple[Path, dict]]:
    """(profile, experiment) -> (path, content) of every `train_summary.json` of Table 2's methods."""
    return {(p.parent.name, p.parent.parent.name): (p, json.loads(p.read_text()))
            for p in sorted(Path(results_root).glob("*/*/train_summary.json")) if p.parent.parent.name in METHODS}


def training_macros(summaries: dict[tuple[str, str], tuple[Path, dict]], profile: str | None) -> list[Macro]:
    """LoRA size (baseline run) and the main run's early-stopping facts at the study's profile."""
    base, main = summaries.get((profile, BASELINE)), summaries.get((profile, MAIN))
    values = {
        "LoraTrainableParams": (f"{base[1]['trainable_parameters']:,}".replace(",", "{,}"), base[0]) if base else None,
        "TransformerParams": (f"{base[1]['transformer_parameters']:,}".replace(",", "{,}"), base[0]) if base else None,
        "MainBestStep": (str(main[1]["best_step"]), main[0]) if main else None,
        "MainStepsRun": (str(main[1]["steps"]), main[0]) if main else None,
    }
    return [Macro(n, v[0], (v[1],)) if v else Macro(n, NOT_AVAILABLE, ()) for n, v in values.items()]


def metric_macros(metrics: pd.DataFrame, results_root: Path) -> list[Macro]:
    """Table 1's headline: 2AFC of LPIPS vs R-LPIPS clean and under the strongest PGD, mean over sets and seeds,
    at the most real profile with 2AFC rows."""
    names = ("MetricProfile", "TwoAfcCleanLpips", "TwoAfcCleanRlpips", "TwoAfcPgdEps", "TwoAfcPgdLpips",
             "TwoAfcPgdRlpips")
    if not metrics["metric"].isin(list(METRIC_ROWS)).any():
        return [Macro(n, NOT_AVAILABLE, ()) for n in names]
    rows = two_afc_rows(metrics)
    profile = most_real_profile(rows["profile"])
    rows = rows[rows["profile"] == profile]
    sources = _metrics_files(results_root, rows)
    pgd = rows[rows["attack"] == "pgd"]
    eps = float(pgd["eps"].max()) if len(pgd) else None

    def score(metric: str, attack: str, at: float) -> str:
        values = rows[(rows["metric"] == metric) & (rows["attack"] == attack) & (rows["eps"] == at)]["value"]
        return _num(float(np.mean(values)) * 100, 1) if len(values) else NOT_AVAILABLE

    values = [profile, score("2afc_lpips", "clean", 0.0), score("2afc_rlpips", "clean", 0.0),
              f"{eps:g}" if eps is not None else NOT_AVAILABLE,
              score("2afc_lpips", "pgd", eps) if eps is not None else NOT_AVAILABLE,
              score("2afc_rlpips", "pgd", eps) if eps is not None else NOT_AVAILABLE]
    return [Macro(n, v, sources if v != NOT_AVAILABLE else ()) for n, v in zip(names, values)]


def compute_macros(compute: ComputeInputs) -> list[Macro]:
    """True-size step time and peak memory: the plain step (`BASELINE_CASE`) and the fastest 720p case measured on
    the same device."""
    cases: dict[tuple[str, str, str], tuple[dict[str, float], Path]] = {}  # (device, case, height) -> figures
    for path, rows in current_bench_steps(compute).steps.items():
        for r in rows:
            if SCALES.get(r["architecture"]) == "true size":
                cases.setdefault((r["device"], r["case"], r["height"]), ({}, path))[0][r["metric"]] = float(r["value"])
    timed = {key: value for key, value in cases.items() if "s_per_step_median" in value[0]}
    baseline = next((key for key in sorted(timed) if key[1] == BASELINE_CASE), None)
    # the paper names one device: the fastest 720p case of the baseline's device, not of whichever GPU was fastest
    best = min((key for key in timed if key[2] == "720" and baseline and key[0] == baseline[0]),
               key=lambda k: timed[k][0]["s_per_step_median"], default=None)
    macros = [Macro("TrueSizeDevice", baseline[0].removeprefix("NVIDIA "), (timed[baseline][1],)) if baseline
              else Macro("TrueSizeDevice", NOT_AVAILABLE, ())]
    for prefix, key in (("TrueSizeBaseline", baseline), ("TrueSizeBest", best)):
        figures, path = timed[key] if key else ({}, None)
        peak = figures.get("peak_allocated_gib")
        macros += [Macro(prefix + "Seconds", _num(figures["s_per_step_median"], 1) if key else NOT_AVAILABLE,
                         (path,) if key else ()),
                   Macro(prefix + "PeakGiB", _num(peak, 1) if peak is not None else NOT_AVAILABLE,
                         (path,) if peak is not None else ())]
    macros.append(Macro("TrueSizeBestCase", rf"\texttt{{{latex_escape(best[1])}}}" if best else NOT_AVAILABLE,
                        (timed[best][1],) if best else ()))
    return macros + cache_macros(compute)


def cache_macros(compute: ComputeInputs) -> list[Macro]:
    """`\\TrueSizeCacheSeconds` (caching one clip at the largest true-size clip measured: VAE latents, condition
    latents, text and image embeddings, the seed's "configuration time") and `\\TrueSizeCacheDevice`."""
    stages: dict[tuple, tuple[dict[str, float], Path]] = {}  # (pixels, device) -> stage seconds
    for path, rows in compute.bench_configuration.items():
        for r in rows:
            if SCALES.get(r["architecture"]) == "true size":
                key = (int(r["frames"]) * int(r["height"]) * int(r["width"]), r["device"])
                stages.setdefault(key, ({}, path))[0][r["stage"]] = float(r["seconds"])
    complete = [key for key, (seconds, _) in stages.items() if all(s in seconds for s in CACHE_STAGES)]
    if not complete:
        return [Macro("TrueSizeCacheSeconds", NOT_AVAILABLE, ()), Macro("TrueSizeCacheDevice", NOT_AVAILABLE, ())]
    key = max(complete)
    seconds, path = stages[key]
    return [Macro("TrueSizeCacheSeconds", _num(sum(seconds[s] for s in CACHE_STAGES), 1), (path,)),
            Macro("TrueSizeCacheDevice", key[1].removeprefix("NVIDIA "), (path,))]


def figure_macros(metrics: pd.DataFrame, strips_profile: str | None, curves_profile: str | None) -> list[Macro]:
    """`\\FramesScale`, `\\CurvesScale`, `\\BarsScale`, `\\EpsScale`: the profile each figure shows and what it
    means, for the figure captions (each figure shows its most real profile; the profiles may differ)."""
    shown = {"FramesScale": strips_profile, "CurvesScale": curves_profile, "BarsScale": figures.bar_rows(metrics)[0]}
    macros = [Macro(name, PROFILE_TEXT[p].generator if p else NOT_AVAILABLE, ()) for name, p in shown.items()]
    two_afc = metrics[metrics["metric"].isin(list(METRIC_ROWS))]
    eps = PROFILE_TEXT[most_real_profile(two_afc["profile"])] if len(two_afc) else None
    return [*macros, Macro("EpsScale", (eps.metric_brief or eps.metric) if eps else NOT_AVAILABLE, ())]


# The values the proxy search chose (results/proxy_search/proxy/provenance.json `extra.chosen`), for the setup
SEARCH_MACROS = {"train.lr": "SearchLr", "train.steps": "SearchSteps", "perceptual.weight": "SearchLambda",
                 "adversarial.eps_255": "SearchEps"}


def read_search(results_root: Path) -> tuple[Path, dict] | None:
    """The finished proxy search's provenance (its `extra.chosen` is the outcome), or None before it has run. Only
    the proxy search is quoted: at smoke it is a pipeline check, and `full` takes the seed's settings."""
    path = Path(results_root) / SEARCH / "proxy" / "provenance.json"
    return (path, json.loads(path.read_text())) if path.is_file() else None


def search_macros(search: tuple[Path, dict] | None) -> list[Macro]:
    """`\\SearchLr`, `\\SearchSteps`, `\\SearchLambda`, `\\SearchEps` (ε x255) and `\\SearchPoints`: what the proxy's
    validation search chose, and among how many points."""
    path, record = search if search is not None else (None, {"extra": {}})
    chosen = {k: v for stage in record["extra"].get("chosen", {}).values() for k, v in stage.items()}
    macros = [Macro(name, rf"\ensuremath{{{chosen[key]:g}}}" if key in chosen else NOT_AVAILABLE,
                    (path,) if key in chosen else ()) for key, name in SEARCH_MACROS.items()]
    points = len(record["extra"].get("points", {}))
    return macros + [Macro("SearchPoints", str(points) if points else NOT_AVAILABLE, (path,) if points else ())]


def make_numbers(metrics: pd.DataFrame, summaries: dict[tuple[str, str], tuple[Path, dict]], compute: ComputeInputs,
                 figure_profiles: tuple[str | None, str | None], results_root: Path,
                 search: tuple[Path, dict] | None = None, floors: dict[tuple[str, str], Floor] | None = None
                 ) -> list[Macro]:
    """Every macro, in a fixed order; a pure function of the parsed results (`results_root` only names files).

    `figure_profiles`: the profiles of the frame-strip and training-curve figures (`figures.strip_paths`,
    `figures.read_training`), which read files rather than metrics; `search`: `read_search`'s.
    """
    study = study_macros(metrics, results_root)
    profile = study[0].value if study[0].value != NOT_AVAILABLE else None
    return [*study, *validity_macros(metrics, profile, results_root),
            *comparison_macros(main_comparison(metrics, floors or {}), metrics, results_root),
            *training_macros(summaries, profile), *metric_macros(metrics, results_root),
            *compute_macros(compute), *figure_macros(metrics, *figure_profiles), *search_macros(search)]


def render_numbers(macros: list[Macro]) -> str:
    """`paper/generated/numbers.tex`: one `\\newcommand` per macro, its sources in a comment."""
    lines = ["% Generated by `python -m cinelora report numbers` from results/: do not edit.",
             "% Every number quoted in the paper's prose; `make provenance` says where each comes from."]
    for macro in macros:
        sources = ", ".join(str(s) for s in macro.sources)
        lines.append(rf"\newcommand{{\{macro.name}}}{{{macro.value}}}" + (f"  % {sources}" if sources else ""))
    return "\n".join(lines) + "\n"


def figure_inputs(results_root: Path) -> tuple[str | None, str | None]:
    """The profiles of the two figures that read files other than metrics.csv."""
    return figures.strip_paths(results_root)[0], figures.read_training(results_root)[0]


def main(results_root: Path, out: Path) -> None:
    """`python -m cinelora report numbers`: results/ → `out` (paper/generated/numbers.tex), atomically."""
    macros = make_numbers(read_results(results_root), read_summaries(results_root), read_compute(results_root),
                          figure_inputs(results_root), results_root, read_search(results_root),
                          read_fvd_floors(results_root))
    atomic_write_text(out, render_numbers(macros))


__all__ = ["make_numbers", "render_numbers", "main", "Macro", "read_summaries", "study_macros", "training_macros",
           "validity_macros", "comparison_macros", "metric_macros", "compute_macros", "cache_macros", "figure_macros", "figure_inputs", "read_search", "search_macros",
           "SEARCH_MACROS", "NOT_AVAILABLE"]
