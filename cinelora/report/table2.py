"""Paper Table 2, cross-domain generalization: the study's methods on every evaluation domain (clean frames).

Rows: per profile (full, proxy, smoke), per domain (the fine-tuning domain first, then the held-out ones), one
row per method. Columns: FVD with its sample size N (one value per domain: no CI), CLIP-SIM and LPIPS as the
mean over clips (and seeds) ± half the width of the 95% bootstrap CI. Bold: the best mean of a column within a
(profile, domain) block. ${}^{*}$: the per-clip values differ from the `lora_r8` baseline on the same clips
(`cinelora.stats.paired_test`, two-sided, p < 0.05 after Holm's correction over all the table's tests); subscript:
the test's rank-biserial effect size. The caption names the tests used and counts them.

The per-clip statistics that Table 3, the figures and `numbers.tex` share live here too.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cinelora.atomic import atomic_write_text
from cinelora.config import PROFILES
from cinelora.report import ARROWS, ci_phrase, count_phrase, fixed, format_mean_ci, latex_escape, scale_notes
from cinelora.results import KEY_COLUMNS, METRICS, read_results
from cinelora.stats import CONFIDENCE, MeanCI, PairedTest, bootstrap_mean_ci, holm_adjust, paired_test
from cinelora.study import BASELINE, EVALUATORS, METHODS, TRAIN_DOMAIN

TABLE2_METRICS = ("fvd", "clip_sim", "lpips")  # column order
CONDITION = "clean"
ALPHA = 0.05

Key = tuple[str, str, str, str]  # (profile, domain, experiment, metric)


@dataclass(frozen=True)
class Cell:
    """One table cell: mean (and CI for per-clip metrics), the clips and seeds behind it, the paired test against
    the baseline (None for FVD, for the baseline itself, or when the baseline has no such cell) and its p-value
    after Holm's correction over the table's tests (`holm_corrected`; None without a test)."""

    ci: MeanCI
    clips: int
    seeds: int
    test: PairedTest | None
    p_holm: float | None = None


@dataclass(frozen=True)
class Floor:
    """A domain's FVD noise floor: FVD between two disjoint sets of `clips` real clips each, the mean over `splits`
    re-partitions (`cinelora.instrument.fvd_sanity`)."""

    fvd: float
    clips: int
    splits: int
    path: Path


def read_fvd_floors(results_root: Path) -> dict[tuple[str, str], Floor]:
    """(profile, domain) -> its noise floor, from the evaluators' `fvd_sanity.csv` of each profile that has one."""
    floors = {}
    for profile in PROFILES:
        path = Path(results_root) / EVALUATORS / profile / "fvd_sanity.csv"
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["corruption"] == "none"]
        for domain in sorted({r["domain"] for r in rows}):
            values = [r for r in rows if r["domain"] == domain]
            floors[profile, domain] = Floor(float(np.mean([float(r["fvd"]) for r in values])),
                                            int(values[0]["clips_a"]), len(values), path)
    return floors


def domain_sort_key(domain: str) -> tuple[int, str]:
    """The fine-tuning domain first, then the held-out domains alphabetically."""
    return (0 if domain == TRAIN_DOMAIN else 1, domain)


def domain_title(domain: str) -> str:
    """"cinematic (fine-tuning)" or "<domain> (held out)"."""
    return f"{domain} ({'fine-tuning' if domain == TRAIN_DOMAIN else 'held out'})"


def clip_means(values: pd.DataFrame) -> pd.Series:
    """Per-clip values (seeds averaged) indexed by (domain, clip), sorted; `values` has domain, clip, value."""
    return values.groupby(["domain", "clip"], sort=True)["value"].mean()


def clip_matrix(values: pd.DataFrame) -> np.ndarray:
    """Values as [n_seeds, n_clips] for `bootstrap_mean_ci` (seeds, then clips resampled); seed-averaged [n_clips]
    when the seeds did not all score the same clips."""
    table = values.pivot_table(index="seed", columns=["domain", "clip"], values="value", aggfunc="first")
    table = table.sort_index().sort_index(axis=1)
    return table.to_numpy() if not table.isna().any().any() else clip_means(values).to_numpy()


def paired_on_clips(values: pd.DataFrame, reference: pd.DataFrame) -> PairedTest | None:
    """`paired_test` of `values` vs `reference` on the (domain, clip) pairs both scored, seeds averaged per clip;
    None when they share no clip."""
    a, b = clip_means(values), clip_means(reference)
    common = a.index.intersection(b.index)
    return paired_test(a[common].to_numpy(), b[common].to_numpy()) if len(common) else None


def holm_corrected(cells: dict[tuple, Cell]) -> dict[tuple, Cell]:
    """`cells` with `p_holm` set: every test's p-value Holm-adjusted over all the tests of `cells` (one table)."""
    tested = [key for key, cell in cells.items() if cell.test is not None and cell.test.p_value is not None]
    adjusted = holm_adjust([cells[key].test.p_value for key in tested])
    return {**cells, **{key: replace(cells[key], p_holm=p) for key, p in zip(tested, adjusted)}}


def significant(cell: Cell) -> bool:
    """Whether `cell` differs from its reference at Holm-adjusted p < ALPHA."""
    return cell.p_holm is not None and cell.p_holm < ALPHA


def effect(cell: Cell) -> float | None:
    """The rank-biserial effect size of `cell`'s paired test; None without a test."""
    return cell.test.rank_biserial if cell.test is not None else None


def tests_sentence(tests: list[PairedTest], reference: str) -> str:
    """Caption sentences naming the paired tests behind the ${}^{*}$ marks, their numbers of pairs and of tests
    (Holm's family), and the effect size in the subscripts."""
    used = sorted({(t.test_name, t.n) for t in tests if t.test_name != "none"})
    if not used:
        return rf"No paired test against {reference} was possible (too few clips that differ)."
    pairs = sorted({n for _, n in used})
    count = f"{pairs[0]}" if len(pairs) == 1 else f"{pairs[0]}--{pairs[-1]}"
    names = " or ".join(sorted({name for name, _ in used}))
    family = count_phrase({sum(t.p_value is not None for t in tests)}, "test")
    return (rf"${{}}^{{*}}$: differs from {reference} on the same clips at $p < {ALPHA:g}$ after Holm's correction "
            rf"over the table's {family}, each a two-sided {names} ({count} clips, seeds averaged per clip; Wilcoxon "
            r"where at least 6 clips differ, else paired $t$-test). Subscript: its effect size, the matched-pairs "
            rf"rank-biserial correlation of the per-clip differences from {reference}, from $-1$ (lower on every "
            r"clip) to $+1$ (higher on every clip).")


def table2_groups(metrics: pd.DataFrame) -> dict[Key, pd.DataFrame]:
    """The rows behind each cell of Table 2 (and `fvd_clips`), keyed by (profile, domain, experiment, metric), from
    tidy metrics (columns of `results.METRIC_COLUMNS`); only clean rows of `METHODS` are used."""
    rows = metrics[(metrics["condition"] == CONDITION) & metrics["experiment"].isin(list(METHODS))
                   & metrics["metric"].isin([*TABLE2_METRICS, "fvd_clips"])]
    # Sorting first makes each cell's bootstrap sample (and so every byte) independent of row order.
    rows = rows.sort_values(list(KEY_COLUMNS), kind="stable")
    return {key: group for key, group in rows.groupby(["profile", "domain", "experiment", "metric"], sort=True)}


def baseline_tests(groups: dict[Key, pd.DataFrame]) -> dict[Key, PairedTest]:
    """The paired test of every per-clip cell of Table 2 against the baseline's cell on the same clips: the
    table's comparisons, over which it corrects (`holm_corrected`)."""
    tests = {}
    for (profile, domain, experiment, metric), group in groups.items():
        baseline = groups.get((profile, domain, BASELINE, metric))
        if metric not in ("fvd", "fvd_clips") and experiment != BASELINE and baseline is not None:
            tests[profile, domain, experiment, metric] = paired_on_clips(group, baseline)
    return {key: test for key, test in tests.items() if test is not None}


def table2_cells(metrics: pd.DataFrame) -> dict[Key, Cell]:
    """Every cell of Table 2, keyed by (profile, domain, experiment, metric), its test Holm-corrected over the
    table's."""
    groups = table2_groups(metrics)
    tests = baseline_tests(groups)
    cells: dict[Key, Cell] = {}
    for (profile, domain, experiment, metric), group in groups.items():
        seeds = group["seed"].nunique()
        if metric == "fvd":
            sizes = groups.get((profile, domain, experiment, "fvd_clips"))
            clips = int(sizes["value"].max()) if sizes is not None else 0
            cells[profile, domain, experiment, metric] = Cell(
                MeanCI(float(group["value"].mean()), None, None, len(group), "none"), clips, seeds, None)
        elif metric != "fvd_clips":
            cells[profile, domain, experiment, metric] = Cell(
                bootstrap_mean_ci(clip_matrix(group)), group["clip"].nunique(), seeds,
                tests.get((profile, domain, experiment, metric)))
    return holm_corrected(cells)


def best_keys(cells: dict[Key, Cell]) -> set[Key]:
    """Keys holding the best displayed mean of their (profile, domain, metric) among at least two methods that
    do not all tie."""
    best: set[Key] = set()
    for block in {(p, d, m) for p, d, _, m in cells}:
        metric = METRICS[block[2]]
        shown = {key: round(cell.ci.mean, metric.decimals) for key, cell in cells.items()
                 if (key[0], key[1], key[3]) == block}
        if len(shown) < 2:  # a lone entry is not "best" of anything
            continue
        target = (min if metric.direction == "lower" else max)(shown.values())
        if any(mean != target for mean in shown.values()):  # when all tie, none is best
            best |= {key for key, mean in shown.items() if mean == target}
    return best


def _format(key: Key, cell: Cell | None, bold: bool) -> str:
    if cell is None:
        return "--"
    if key[3] == "fvd":
        number = fixed(cell.ci.mean, METRICS["fvd"].decimals)
        return (rf"$\mathbf{{{number}}}$" if bold else f"${number}$") + f" (N={cell.clips})"
    return format_mean_ci(cell.ci, METRICS[key[3]].decimals, bold, significant(cell), effect(cell))


def _caption(profiles: list[str], cells: dict[Key, Cell], floors: dict[tuple[str, str], Floor]) -> str:
    per_clip = [c for k, c in cells.items() if k[3] != "fvd"]
    fvd = [c for k, c in cells.items() if k[3] == "fvd"]
    text = (rf"Cross-domain generalization ({CONDITION} conditioning frames): each method on the fine-tuning "
            r"domain and on domains the LoRA never saw. CLIP-SIM and LPIPS: mean $\pm$ half the width of its "
            rf"{round(CONFIDENCE * 100)}\% bootstrap CI ({ci_phrase({c.ci.method for c in per_clip})})")
    if per_clip:
        text += (f" over {count_phrase({c.clips for c in per_clip}, 'clip')} $\\times$ "
                 f"{count_phrase({c.seeds for c in per_clip}, 'seed')}")
    text += ". "
    if fvd:
        text += ("FVD: one value per domain (mean over seeds when there are several), with N, the number of clips "
                 "behind it; no CI, and FVD from few clips is dominated by its sample-size bias. ")
    if floors:
        text += (r"\emph{real vs real}: the domain's FVD noise floor, between two disjoint sets of N real clips "
                 f"(mean over {count_phrase({f.splits for f in floors.values()}, 're-partition')}; "
                 rf"\texttt{{results/{latex_escape(EVALUATORS)}/<profile>/fvd\_sanity.csv}}): an FVD near it cannot "
                 "be told from the real clips. ")
    text += (r"$\downarrow$/$\uparrow$: lower/higher is better; bold: best mean of its column within a domain and "
             "profile. " + tests_sentence([c.test for c in per_clip if c.test is not None],
                                          rf"\texttt{{{latex_escape(BASELINE)}}}")
             + f" Profiles: {', '.join(profiles)}.")
    notes = scale_notes(profiles)
    return text + (" " + notes if notes else "")


def make_table2(metrics: pd.DataFrame, floors: dict[tuple[str, str], Floor] | None = None) -> str:
    """Table 2 as a booktabs `table` fragment (label `tab:cross-domain`); a pure function of `metrics` and the
    FVD noise `floors` (a "real vs real" row under each domain that has one).

    Raises ValueError when `metrics` holds no clean rows of the methods' Table 2 metrics.
    """
    cells = table2_cells(metrics)
    if not cells:
        raise ValueError(f"make_table2: no {CONDITION} rows of metrics {list(TABLE2_METRICS)} for methods "
                         f"{list(METHODS)}: run their experiments/<name>/run.sh first")
    bold = best_keys(cells)
    profiles = [p for p in PROFILES if any(k[0] == p for k in cells)]
    floors = {key: floor for key, floor in (floors or {}).items()
              if any(k[:2] == key for k in cells)}  # of the domains shown
    header = " & ".join(["Domain", "Method", *(f"{METRICS[m].label} {ARROWS[METRICS[m].direction]}"
                                               for m in TABLE2_METRICS)]) + r" \\"
    width = len(TABLE2_METRICS) + 2
    lines = [
        r"% Generated by `python -m cinelora report table2` from results/*/*/metrics.csv: do not edit.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_caption(profiles, cells, floors)}}}",
        r"\label{tab:cross-domain}",
        r"\small",
        rf"\begin{{tabular}}{{ll{'c' * len(TABLE2_METRICS)}}}",
        r"\toprule",
        header,
    ]
    for profile in profiles:
        lines += [r"\midrule", rf"\multicolumn{{{width}}}{{l}}{{\emph{{profile: {profile}}}}} \\"]
        domains = sorted({k[1] for k in cells if k[0] == profile}, key=domain_sort_key)
        for i, domain in enumerate(domains):
            if i:
                lines.append(r"\addlinespace")
            methods = [m for m in METHODS if any(k[:3] == (profile, domain, m) for k in cells)]
            for j, method in enumerate(methods):
                entries = [_format((profile, domain, method, m), cells.get((profile, domain, method, m)),
                                   (profile, domain, method, m) in bold) for m in TABLE2_METRICS]
                first = latex_escape(domain_title(domain)) if j == 0 else ""
                lines.append(" & ".join([first, rf"\texttt{{{latex_escape(method)}}}", *entries]) + r" \\")
            floor = floors.get((profile, domain))
            if floor is not None:
                fvd = f"${fixed(floor.fvd, METRICS['fvd'].decimals)}$ (N={floor.clips})"
                lines.append(" & ".join(["", r"\emph{real vs real}", *[fvd if m == "fvd" else "--"
                                                                       for m in TABLE2_METRICS]]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def main(results_root: Path, out: Path) -> None:
    """Read every `results_root/*/*/metrics.csv` and write Table 2 to `out` atomically.

    `python -m cinelora report table2` calls this with `results` and `paper/tables/table2.tex`.
    """
    text = make_table2(read_results(results_root), read_fvd_floors(results_root))
    atomic_write_text(out, text)


__all__ = ["make_table2", "table2_cells", "read_fvd_floors", "main", "Cell", "Floor", "TABLE2_METRICS", "domain_sort_key", "domain_title",
           "clip_means", "clip_matrix", "paired_on_clips", "table2_groups", "baseline_tests", "holm_corrected",
           "significant", "effect", "tests_sentence", "best_keys"]
